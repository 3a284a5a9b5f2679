"""Every error StitchLab raises on purpose, in one torch-free module.

Pages, the CLI and the job worker catch these by type; importing them must not import torch
(the dashboard's first paint) and must not create import cycles (every module may raise them).
An error's message says what was wrong and how to fix it; it is shown to the user as it is.
"""

from __future__ import annotations

__all__ = ["Cancelled", "CheckpointError", "DeviceUnavailable", "LstsqTooLarge", "NotStitchable", "QueueFull",
           "StoreDamaged", "StoreError", "StoreFull", "StoreReadOnly", "UntraceableError", "ZooError"]


class Cancelled(Exception):
    """The user cancelled the computation; whatever it had finished (cells, batches) is kept."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the reason and what to do instead."""


class DeviceUnavailable(ValueError):
    """A device this machine does not have. The message ends with :attr:`FIX`, in words that fit
    anywhere; the CLI and the dashboard replace it with how *their* user picks the device."""

    FIX = "choose the cpu or auto device"


class LstsqTooLarge(ValueError):
    """The normal equations of this stitch would not fit in memory."""


class NotStitchable(ValueError):
    """No stitch of acceptable size connects these two shapes."""


class QueueFull(RuntimeError):
    """Too many jobs are waiting; the message says how many and what to do."""


class StoreError(RuntimeError):
    """The database file cannot be used as a StitchLab store."""


class StoreFull(StoreError):
    """The disk holding the store is full: what is stored can be read, nothing new saved."""


class StoreReadOnly(StoreError):
    """The store (its file, folder or file system) cannot be written: it can only be read."""


class StoreDamaged(StoreError):
    """The store's file is damaged (SQLite found it malformed)."""


class UntraceableError(TypeError):
    """torch.fx could not trace the model."""


class ZooError(ValueError):
    """A zoo model that is unknown, missing or altered."""
