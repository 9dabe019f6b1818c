"""Where and in which precision torch work runs: ``resolve_device`` and ``resolve_precision``.

Shared by fitting and the protocol's classifier (one rule for "does this CPU compute bf16 natively").
"""

from __future__ import annotations

import re

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


_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index), 'mps', or a torch.device of those"
_DEVICE_TEXT = re.compile(r"(auto|cpu|mps|cuda)(?::([0-9]{1,4}))?")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` becomes ``cuda`` when available, else ``cpu``; anything else is checked.

    Accepted: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device`` of
    those types; a device that is not there (no CUDA, GPU index out of range) is a ``ValueError``
    that says what is available, never torch's ``RuntimeError`` from a later ``.to(device)``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> try:
        ...     resolve_device("gpu")
        ... except ValueError as e:
        ...     print(str(e)[:40])
        device must be 'auto', 'cpu', 'cuda', 'c
    """
    index: int | None
    if isinstance(device, torch.device):
        kind, index = device.type, device.index
    elif isinstance(device, str):
        m = _DEVICE_TEXT.fullmatch(device)
        if m is None or (m.group(1) == "auto" and m.group(2) is not None):
            raise ValueError(f"device must be {_FORMS}; got {device[:50]!r}")
        kind, index = m.group(1), None if m.group(2) is None else int(m.group(2))
    else:
        raise TypeError(f"device must be a string ({_FORMS}); got {type(device).__name__}")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r} was asked for but MPS (Apple GPU) is not available; "
                             "use device='cpu' or 'auto'")
        return torch.device("mps")
    if kind != "cuda":
        raise ValueError(f"device must be {_FORMS}; got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available; use device='cpu'")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ValueError(f"device {str(device)!r} was asked for but this machine has {count} CUDA device(s) "
                         f"(cuda:0 to cuda:{count - 1}); use one of those or 'cuda'")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")
