"""Device choice and the mixed-precision policy, in one place."""

from __future__ import annotations

import contextlib
import platform
import re

import torch

from core.errors import DeviceUnavailable

__all__ = ["check_device_name", "resolve_device", "autocast_for"]


# What StitchLab runs on. torch.device knows some twenty device types (tpu is not one of them,
# xla, mps, meta ... are), and its error for a bad one is a RuntimeError listing them all.
_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def check_device_name(device: str | torch.device | None) -> None:
    """Raise ``ValueError`` in one line unless ``device`` names a device StitchLab runs on
    (``auto``, ``cpu``, ``cuda``, ``cuda:N``); whether this machine has it is
    :func:`resolve_device`'s question."""
    if device is None or isinstance(device, torch.device):
        return
    if not isinstance(device, str) or not _DEVICE_NAME.match(device):
        raise ValueError(f"unknown device {device!r}: choose auto, cpu, cuda (or cuda:N, the N-th GPU)")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    check_device_name(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # Neutral words: the job worker shows this in the dashboard, where there is no --device flag.
        raise DeviceUnavailable(f"device {str(device)!r} was asked for but no CUDA GPU is available here: "
                                f"{DeviceUnavailable.FIX}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device {str(device)!r} was asked for but this machine has "
                                f"{torch.cuda.device_count()} CUDA GPU(s), cuda:0 to "
                                f"cuda:{torch.cuda.device_count() - 1}: {DeviceUnavailable.FIX}")
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
