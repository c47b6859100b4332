"""Turning a device string (cpu, cuda, cuda:N, mps, auto) into a torch.device that this machine has."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import DeviceError, DeviceUnavailableError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"
_PATTERN = re.compile(r"^(cpu|mps|auto|cuda(?::(\d+))?)$")

if TYPE_CHECKING:
    import torch


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_device(spec: str | torch.device | None) -> str:
    """Normalize a device string without checking the hardware; raise DeviceError if malformed."""
    if spec is None:
        return "auto"
    text = str(spec).strip().lower()
    if not _PATTERN.match(text):
        raise DeviceError(f"unknown device {str(spec)!r}: expected {DEVICE_CHOICES}")
    return text


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The torch.device for spec; DeviceUnavailableError when this machine lacks it."""
    import torch  # here, so that parsing a device string (settings, --help) does not load torch

    text = parse_device(spec)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise DeviceUnavailableError("device 'mps' requested but Apple MPS is not available on this machine")
        return torch.device("mps")
    index = int(text.split(":")[1]) if ":" in text else 0
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {text!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailableError(f"device {text!r} requested but this machine has {count} CUDA device(s)")
    return torch.device(f"cuda:{index}")
