"""Where and in which precision torch work runs: ``resolve_device`` and ``resolve_precision``.

Shared by fitting and the protocol's classifier (one rule for "does this CPU compute bf16 natively").
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a fit runs in: ``"auto"`` picks bf16 where the hardware computes it natively
    (CPUs with AMX or AVX-512 BF16, GPUs with bf16), fp16 with a gradient scaler on older GPUs, and
    fp32 elsewhere.

    Example:
        >>> resolve_precision("fp32", torch.device("cpu"))
        'fp32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (CPUs compute fp16 slowly); use 'bf16' or 'fp32'")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and any(getattr(torch.cpu, probe, lambda: False)()  # private probes: may vanish
                                    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")):
        return "bf16"
    return "fp32"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` becomes ``cuda`` when available, else ``cpu``; anything else is checked.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use device='cpu'")
    return dev
