"""Wire protocols: the Open Inference Protocol (KServe V2 / Triton), one codec for both ends.

* :mod:`aimass.protocol.v2` -- inference requests and responses (JSON and binary tensors);
* :mod:`aimass.protocol.documents` -- the other V2 documents: server metadata, model metadata,
  Triton-style model config and repository index, built by the server and parsed by clients.

Example:
    >>> from aimass.protocol import documents, v2
    >>> body, headers = v2.encode_request({"x": [[1.0, 2.0]]})   # doctest: +SKIP
    >>> documents.parse_server_metadata({"extensions": ["binary_tensor_data"]}).supports("binary_tensor_data")
    True
"""
