"""MXNet 1.9 models: a Gluon ``HybridBlock`` object or an exported ``-symbol.json`` + ``-NNNN.params`` pair.

Both become one hybridized ``gluon.SymbolBlock`` run with ``mx.nd`` on ``mx.cpu()``, or on
``mx.gpu(i)`` for ``device="cuda:i"`` (a DeviceError when MXNet sees no GPU, as with the CPU-only
``mxnet`` wheel). A block object is never changed: its symbol is traced with ``block(mx.sym.var)``
and the SymbolBlock shares its parameters. Calls take a lock, because a hybridized block with
``static_alloc`` reuses its output buffers from call to call.

A symbol records input names but not shapes, so both sources need ``example_input=`` or
``schema=``. Inputs are named ``data`` (``data0, data1 ...`` for several, Gluon's export
convention) unless the example's keys name them; outputs are ``output`` (``output_0 ...``).
Saving writes ``model-symbol.json`` and ``model-0000.params``; loading a ``-symbol.json`` path
reads the ``-NNNN.params`` beside it with the highest epoch (or ``options={"params": path}``),
and in a package only among the params files its manifest lists: an unlisted one is ignored.

numpy aliases: mxnet 1.9.1 is the last release of a retired project and still uses the aliases
``np.bool``, ``np.int``, ``np.float``, ``np.complex``, ``np.object`` and ``np.str`` that numpy
1.24 removed, so ``import mxnet`` fails with ``AttributeError: module 'numpy' has no attribute
'bool'``. Just before this backend first imports mxnet, :func:`restore_numpy_aliases` sets
exactly the missing ones to the builtins they used to name (which is what they were); nothing
else in aimass touches numpy's namespace. If mxnet is already imported, nothing is changed.

Example:
    >>> from aimass import Model
    >>> m = Model.load(gluon_block, example_input={"data": np.zeros((2, 4), np.float32)})   # doctest: +SKIP
    >>> m = Model.load("mlp-symbol.json", example_input=np.zeros((2, 4), np.float32))       # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError
from aimass.package import checksummed_names, member
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["NUMPY_ALIASES", "MXNetBackend", "import_mxnet", "restore_numpy_aliases"]

# The aliases numpy 1.20 deprecated and 1.24 removed, which mxnet 1.9.1 still uses.
NUMPY_ALIASES: tuple[str, ...] = ("bool", "int", "float", "complex", "object", "str")


def restore_numpy_aliases() -> list[str]:
    """Set the removed numpy aliases mxnet needs (``np.int = int`` ...) where missing; return those set.

    Checks ``vars(numpy)`` rather than ``hasattr``: numpy 1.26's module ``__getattr__`` warns on
    the removed names. Aliases numpy still has (``np.bool`` in numpy 2) are left alone.

    Example:
        >>> restore_numpy_aliases()   # doctest: +SKIP
        ['bool', 'int', 'float', 'complex', 'object', 'str']
    """
    namespace = vars(np)
    restored = [name for name in NUMPY_ALIASES if name not in namespace]
    for name in restored:
        setattr(np, name, getattr(builtins, name))
    return restored


def import_mxnet() -> Any:
    """``import mxnet``, restoring the numpy aliases it needs first; BackendUnavailable when not installed.

    Example:
        >>> mx = import_mxnet()   # doctest: +SKIP
        >>> mx.nd.zeros((2, 3)).shape   # doctest: +SKIP
        (2, 3)
    """
    if "mxnet" not in sys.modules:
        restore_numpy_aliases()
    return require_framework("mxnet", backend="mxnet", extra="mxnet")


def _context(device: str) -> Any:
    mx = import_mxnet()
    kind, index = split_device(device)
    if kind == "cpu":
        return mx.cpu()
    gpus = mx.context.num_gpus()
    if index >= gpus:
        raise DeviceError(
            f"device {device!r}: MXNet sees {gpus} GPU(s) (the 'mxnet' wheel is CPU-only; "
            "a CUDA build such as mxnet-cu112 is needed)"
        )
    return mx.gpu(index)


def _output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _default_input_names(count: int) -> list[str]:
    return ["data"] if count == 1 else [f"data{i}" for i in range(count)]


class MXNetBackend(Backend):
    """A hybridized Gluon ``SymbolBlock`` (from a block object or an exported symbol + params)."""

    name: ClassVar[str] = "mxnet"
    framework: ClassVar[str] = "mxnet"
    extra: ClassVar[str] = "mxnet"
    suffixes: ClassVar[tuple[str, ...]] = ("-symbol.json",)
    type_modules: ClassVar[tuple[str, ...]] = ("mxnet.",)

    def __init__(self, symbol: Any, params: Any, schema: Schema, device: str) -> None:
        mx = import_mxnet()
        self.device = device
        self._ctx = _context(device)
        self._symbol = symbol
        self._params = params  # a ParameterDict (shared with a user's block) or {name: NDArray}
        self._input_names = schema.input_names
        self._dtypes = [t.dtype.numpy for t in schema.inputs]
        inputs = [mx.sym.var(n) for n in self._input_names]
        try:
            with warnings.catch_warnings():
                # SymbolBlock warns that it "cannot decide the type" of inputs; run() passes typed arrays.
                warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
                if isinstance(params, Mapping):
                    block = mx.gluon.SymbolBlock(outputs=symbol, inputs=inputs)
                    block.collect_params().load_dict(dict(params), ctx=self._ctx)
                else:  # a user's block: share its parameters, do not copy them
                    block = mx.gluon.SymbolBlock(outputs=symbol, inputs=inputs, params=params)
        except Exception as e:  # MXNetError / AssertionError for symbols and params that do not fit
            raise ModelLoadError(f"mxnet could not build a block from this symbol: {type(e).__name__}: {e}") from e
        block.hybridize(static_alloc=True)
        self.block = block
        self._lock = threading.Lock()
        # mx.nd.array's own isinstance check against scipy.sparse.csr warns on every call; this skips it.
        self._nd_array = mx.nd.ndarray.array
        self.schema = schema
        self._output_names = schema.output_names
        if not schema.outputs:
            self.schema = schema.model_copy(update={"outputs": self._infer_outputs(schema)})
            self._output_names = self.schema.output_names

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> MXNetBackend:
        mx = import_mxnet()
        options = options or {}
        _context(device)
        if isinstance(source, (str, Path)):
            symbol, params = _load_pair(Path(source), options.get("params"))
            names = [n for n in symbol.list_inputs() if n not in params]
        elif isinstance(source, mx.gluon.HybridBlock):
            params = source.collect_params()
            if split_device(device)[0] != "cpu":  # shared parameters live on the block's (CPU) context
                params = {k: p.data() for k, p in params.items()}
            names = None
            symbol = None
        elif isinstance(source, mx.gluon.Block):
            raise ModelLoadError(
                f"{type(source).__name__} is a Gluon Block, not a HybridBlock: only HybridBlocks can be traced; "
                "build it from HybridBlock/HybridSequential"
            )
        else:
            raise ModelLoadError(
                f"the mxnet backend needs a Gluon HybridBlock or a -symbol.json file, got {type(source)}"
            )
        schema = schema or _input_schema(example_input, names)
        if names is not None and sorted(names) != sorted(schema.input_names):
            raise ModelLoadError(f"the symbol's inputs are {names}; the schema names {schema.input_names}")
        if symbol is None:
            try:
                symbol = source(*[mx.sym.var(n) for n in schema.input_names])
            except Exception as e:  # user code in hybrid_forward
                raise ModelLoadError(f"mxnet could not trace this block: {type(e).__name__}: {e}") from e
            if isinstance(symbol, (list, tuple)):
                symbol = mx.sym.Group(list(symbol))
        return cls(symbol, params, schema, device)

    def _infer_outputs(self, schema: Schema) -> list[TensorSpec]:
        values = self._forward(schema.example(batch=2))
        return [
            TensorSpec(name=n, dtype=DType.from_numpy(v.dtype), shape=[-1, *v.shape[1:]])
            for n, v in zip(_output_names(len(values)), values, strict=True)
        ]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._forward(inputs), strict=True))

    def _forward(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            arrays = [
                self._nd_array(inputs[n], ctx=self._ctx, dtype=dt)
                for n, dt in zip(self._input_names, self._dtypes, strict=True)
            ]
            with self._lock:
                out = self.block(*arrays)
                return [o.asnumpy() for o in out] if isinstance(out, (list, tuple)) else [out.asnumpy()]
        except Exception as e:  # MXNetError raised by the engine when reading results
            raise PredictionError(f"mxnet failed: {type(e).__name__}: {e}") from e

    def to(self, device: str) -> MXNetBackend:
        if device == self.device:
            return self
        return MXNetBackend(self._symbol, self._param_arrays(), self.schema, device)

    def _param_arrays(self) -> dict[str, Any]:
        mx = import_mxnet()
        return {k: p.data().copyto(mx.cpu()) for k, p in self.block.collect_params().items()}

    def save(self, directory: Path) -> list[str]:
        mx = import_mxnet()
        symbol_file, params_file = "model-symbol.json", "model-0000.params"
        self._symbol.save(str(directory / symbol_file))
        arguments = set(self._symbol.list_arguments())
        mx.nd.save(
            str(directory / params_file),
            {(f"arg:{k}" if k in arguments else f"aux:{k}"): v for k, v in self._param_arrays().items()},
        )
        return [symbol_file, params_file]


def _load_pair(path: Path, params_path: Any) -> tuple[Any, dict[str, Any]]:
    mx = import_mxnet()
    if not path.name.endswith("-symbol.json"):
        raise ModelLoadError(f"{path.name!r} is not an MXNet '-symbol.json' file")
    prefix = path.name[: -len("-symbol.json")]
    if params_path is None:
        candidates = _params_files(path.parent, prefix)
        if not candidates:
            raise ModelLoadError(f"no {prefix}-NNNN.params beside {path.name!r} (pass options={{'params': path}})")
        params_path = candidates[-1]
    try:
        symbol = mx.sym.load(str(path))
        saved = mx.nd.load(str(params_path))
    except Exception as e:  # MXNetError for malformed json or params
        raise ModelLoadError(f"mxnet could not load {path.name!r}: {str(e).splitlines()[0]}") from e
    params = {k.split(":", 1)[-1]: v for k, v in saved.items()}  # "arg:name" / "aux:name" -> name
    return symbol, params


def _params_files(directory: Path, prefix: str) -> list[Path]:
    """The ``<prefix>-NNNN.params`` files beside a symbol, by epoch.

    Inside a package only the files its manifest lists (and :func:`aimass.package.verify` has
    checksummed) are candidates: a params file dropped in later, even with a higher epoch, is
    ignored rather than picked. Outside a package, every such file beside the symbol is.
    """
    pattern = re.compile(rf"{re.escape(prefix)}-[0-9]{{4}}\.params")
    _, listed = checksummed_names(directory)
    if not listed:  # not in a package (a package lists at least the symbol file it was loaded by)
        return sorted(f for f in directory.glob(f"{prefix}-*.params") if pattern.fullmatch(f.name))
    return sorted(member(directory, name) for name in listed if pattern.fullmatch(name))


def _input_schema(example_input: Any, names: list[str] | None) -> Schema:
    if example_input is None:
        raise ModelLoadError(
            "an MXNet symbol does not record its input shapes: pass example_input={name: array} "
            "or schema=Schema(...) to Model.load"
        )
    if not isinstance(example_input, Mapping):
        if names is not None and len(names) != 1:
            raise ModelLoadError(f"the symbol has inputs {names}: pass example_input as a dict of name -> array")
        example_input = {(names or _default_input_names(1))[0]: example_input}
    example = {str(k): np.asarray(v) for k, v in example_input.items()}
    return Schema(
        inputs=[
            TensorSpec(name=k, dtype=DType.from_numpy(v.dtype), shape=[-1, *v.shape[1:]]) for k, v in example.items()
        ]
    )
