"""Which int8 kernels onnxruntime runs on a CPU, and the quantization recipe that suits them.

onnxruntime's x86 int8 matrix kernels differ by instruction set, and so does what int8 can lose:

- **AMX** and **VNNI** (``avx512_vnni``, ``avx_vnni``) multiply uint8 activations by int8 weights
  and accumulate in int32: nothing saturates, so full 8-bit weights are right.
- **AVX-512 without VNNI** and **AVX2** use ``VPMADDUBSW``, which adds two uint8 x int8 products
  into a *saturating int16*: 255 x 127 x 2 = 64770 overflows 32767, and outputs drift (on an
  AVX2-only CPU, int8 of every all-MiniLM-L6-v2 layer reached a worst cosine of 0.866 against
  0.95-0.96 with VNNI). onnxruntime's documented remedy is ``reduce_range``: 7-bit weights
  (255 x 63 x 2 = 32130 fits), one bit of weight precision for no saturation at full speed
  (its u8u8 kernels avoid saturation too, but are slower).
- Other CPUs (ARM's dot-product kernels, anything unknown) do not saturate; full range.

The class is read from the CPU running this process (numpy's run-time CPUID probe, which sees what
an emulator such as ``qemu-x86_64 -cpu Haswell`` presents, then ``/proc/cpuinfo`` for the flags
numpy does not name), and can be set instead: ``compress("int8", isa="avx2")`` quantizes for an
AVX2-only server from any machine.

Example:
    >>> kernel_recipe("avx2").reduce_range
    True
    >>> kernel_recipe("avx512_vnni").reduce_range
    False
    >>> isa_from_flags({"avx2", "avx512f", "avx512bw", "avx512_vnni"})
    'avx512_vnni'
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import platform
from collections.abc import Iterable
from pathlib import Path

from aimass.errors import UnsupportedOperation

__all__ = ["ISAS", "KernelRecipe", "cpu_isa", "isa_from_flags", "kernel_recipe"]

#: The int8 CPU classes, best first.
ISAS = ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "other")
_SATURATING = frozenset({"avx512", "avx2"})


@dataclasses.dataclass(frozen=True)
class KernelRecipe:
    """How to quantize for one CPU class: ``reduce_range`` (7-bit weights) and why."""

    isa: str
    reduce_range: bool
    reason: str

    def note(self) -> str:
        """One line for a compression report's notes."""
        return f"int8 kernels for CPU class {self.isa}: {self.reason}"


def kernel_recipe(isa: str) -> KernelRecipe:
    """The recipe for a CPU class in :data:`ISAS`; see the module docstring for the reasons."""
    if isa not in ISAS:
        raise UnsupportedOperation(f"int8 CPU class: expected one of {', '.join(ISAS)}, got {isa!r}")
    if isa in _SATURATING:
        return KernelRecipe(
            isa,
            True,
            "7-bit weights (reduce_range), because this CPU's u8s8 kernels add products in saturating "
            "16-bit registers (no VNNI)",
        )
    return KernelRecipe(isa, False, "full 8-bit weights (the u8s8 kernels accumulate in 32 bits: nothing saturates)")


def isa_from_flags(flags: Iterable[str]) -> str:
    """The int8 class of a CPU with these ``/proc/cpuinfo``-style flags (lower case)."""
    have = set(flags)
    if "amx_int8" in have:
        return "amx"
    if "avx512_vnni" in have and "avx512bw" in have:
        return "avx512_vnni"
    if "avx_vnni" in have:
        return "avx_vnni"
    if "avx512bw" in have:
        return "avx512"
    if "avx2" in have:
        return "avx2"
    return "other"


def _proc_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpuid_flags() -> set[str] | None:
    """The AVX flags numpy's CPUID probe found in this process, in ``/proc/cpuinfo`` spelling; None if unknown."""
    # numpy publishes its probe only through np.show_runtime(); the dict behind it is the one place
    # in the dependencies that reads CPUID, so read it (numpy 2 moved it, and warns on numpy.core).
    features: dict[str, bool] | None = None
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if features is not None:
            break
    if features is None:
        return None
    names = {"AVX2": "avx2", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni", "AVX512F": "avx512f"}
    return {flag for key, flag in names.items() if features.get(key)}


@functools.cache  # the CPU does not change under a running process
def cpu_isa() -> str:
    """The int8 class of the CPU running this process: one of :data:`ISAS`."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    cpuid = _cpuid_flags()
    flags = _proc_flags()
    if cpuid is not None:
        # What CPUID says this process may use wins over /proc/cpuinfo, which describes the host
        # (under an emulator the two differ); /proc only adds the flags numpy does not probe, and
        # only on a CPU that has what those flags build on.
        extra = {"amx_int8"} if "avx512_vnni" in cpuid else set()
        extra |= {"avx_vnni"} if "avx2" in cpuid else set()
        flags = cpuid | (flags & extra)
    return isa_from_flags(flags)
