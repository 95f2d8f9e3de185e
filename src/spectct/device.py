"""Choice of torch device: CPU by default, CUDA when asked for and present."""

from __future__ import annotations

import torch

from spectct.errors import InputError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return a torch device; ``None`` or ``"auto"`` picks CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev
