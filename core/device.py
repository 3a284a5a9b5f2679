"""Device choice and the mixed-precision policy, in one place."""

from __future__ import annotations

import contextlib
import platform

import torch

from core.errors import DeviceUnavailable

__all__ = ["resolve_device", "autocast_for"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # Neutral words: the job worker shows this in the dashboard, where there is no --device flag.
        raise DeviceUnavailable(f"device {str(device)!r} was asked for but no CUDA GPU is available here: "
                                f"{DeviceUnavailable.FIX}")
    return device


def device_name(device: torch.device) -> str:
    """What a manifest or a benchmark records as the device: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def autocast_for(device: torch.device, enabled: bool | None = None):
    """bf16 autocast on CUDA (tensor cores; bf16 needs no loss scaling), nothing on CPU.

    On CPU, bf16 autocast is slower than fp32 on most processors and changes results, so
    the CPU path stays in fp32 unless ``enabled=True`` is asked for explicitly.
    """
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
