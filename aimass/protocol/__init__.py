"""Wire protocols. :mod:`aimass.protocol.v2` is the Open Inference Protocol (KServe V2 / Triton) codec.

Example:
    >>> from aimass.protocol import v2
    >>> body, headers = v2.encode_request({"x": [[1.0, 2.0]]})   # doctest: +SKIP
"""
