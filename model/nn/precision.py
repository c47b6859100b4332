"""The arithmetic a model runs in: ``fp32`` (exact, the default), or opt-in ``bf16`` / ``int8``.

- ``fp32``: the reference's arithmetic; forecasts equal the reference's up to float32 rounding.
- ``bf16``: the prepared weights and the activations in bfloat16 (attention and its key/value cache
  stay float32: see ``attention.py``). On a CPU this needs AVX512-BF16 or AMX (oneDNN's bf16
  kernels); elsewhere bf16 is emulated and many times slower than fp32, so it is refused.
- ``int8``: bf16 activations, and each weight stored as int8 with one float scale per output channel
  (weight-only quantization); decode steps run PyTorch's int8 weight-only product
  (``torch._weight_int8pack_mm``, what torchao's int8 weight-only mode runs on a CPU). CPU only.

Reduced precision is never the reference's numbers: ``benchmarks/README.md`` has what it does to
forecast quality, measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PrecisionError

if TYPE_CHECKING:  # torch is imported where it is used: the service reads PRECISIONS without it
    import torch

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"


def check_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``precision`` if this machine runs it at speed on ``device``, else ``PrecisionError`` saying why."""
    import torch

    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision
    device = torch.device(device)
    if device.type == "cpu":
        if not cpu_has_bf16():
            raise PrecisionError(
                f"precision {precision!r} needs a CPU with AVX512-BF16 or AMX (bf16 arithmetic in hardware); "
                "this one has neither, and emulated bf16 is many times slower than fp32. Use precision='fp32'"
            )
        return precision
    if precision == "int8":
        raise PrecisionError(f"precision 'int8' runs on a CPU only, not on {device.type}; use 'bf16' or 'fp32'")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"precision 'bf16' needs a GPU with bf16 support; {device} has none. Use 'fp32'")
    return precision


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of the prepared weights' products and of the activations between them."""
    import torch

    return torch.float32 if precision == "fp32" else torch.bfloat16


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16)."""
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        return True
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
