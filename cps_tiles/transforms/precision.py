"""Arithmetic of the transforms: float32, or bfloat16 where the hardware computes it natively.

Importing this module does not import torch (``cps-tiles --help`` lists ``PRECISIONS`` without
loading it); the functions import it when called.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Arithmetic of the transforms: float32, or bfloat16 (oneDNN/AMX on CPUs that have it, about
#: twice as fast there; results differ from float32 by bf16 rounding but are deterministic).
PRECISIONS = ("float32", "bfloat16")


@functools.cache  # a fact of the hardware, asked once per tile: look it up once per process
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether a ``device_type`` ("cpu", "cuda") device computes bf16 natively. A CPU needs
    AVX512-BF16 or AMX: an Intel Xeon with them trains in bf16 in half the time of float32
    (``benchmarks/train_step.md``), while an AVX2-only CPU emulates bf16, 7x slower than float32
    (``benchmarks/train_step_avx2.md``)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def precision_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (the transforms' and the trainer's)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    device_type = torch.device(device).type
    if not native_bf16(device_type):
        # still correct (and deterministic), only slow: say so instead of refusing
        warnings.warn(f"{device_type} has no native bf16 (a CPU needs AVX512-BF16 or AMX): "
                      "bfloat16 runs emulated, slower than float32", stacklevel=2)
    return torch.autocast(device_type, dtype=torch.bfloat16)
