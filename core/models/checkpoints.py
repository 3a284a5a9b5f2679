"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``.

A checkpoint from a stranger is data, never code: pickles are only ever opened with
``weights_only=True``, which refuses any object that is not a tensor or a plain container,
so a planted ``__reduce__`` payload is rejected before it runs.

StitchLab's own checkpoints are safetensors files whose metadata carries the architecture
config and input description (key ``stitchlab``), so ``file:PATH`` needs nothing else.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError

__all__ = ["read_checkpoint", "save_checkpoint", "apply_state_dict", "max_upload_bytes", "CheckpointError"]

METADATA_KEY = "stitchlab"


def max_upload_bytes() -> int:
    """Largest checkpoint StitchLab opens (``STITCHLAB_MAX_CHECKPOINT_MB``, default 200 MB, as the app's
    upload limit in .streamlit/config.toml)."""
    return int(float(os.environ.get("STITCHLAB_MAX_CHECKPOINT_MB", "200")) * 1024 * 1024)


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length, then a JSON header.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Return ``(state_dict, stitchlab_metadata_or_None)`` from a safetensors or torch file.

    Raises :class:`CheckpointError` for a missing, oversized, truncated or non-weights file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    limit = max_upload_bytes()
    if size > limit:
        raise CheckpointError(f"checkpoint {path.name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit "
                              f"(raise STITCHLAB_MAX_CHECKPOINT_MB to allow it)")
    if size == 0:
        raise CheckpointError(f"checkpoint {path.name} is empty")
    if _is_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path), None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} looks like safetensors but cannot be read ({exc}); "
                              f"is the file truncated? Save it again with safetensors.torch.save_file") from None
    meta = None
    if METADATA_KEY in metadata:
        try:
            meta = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError:
            raise CheckpointError(f"{path.name} has unreadable StitchLab metadata") from None
    return tensors, meta


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path.name} was refused: it holds objects other than tensors, and StitchLab only opens "
            f"weights-only checkpoints ({first}). Save the model's state_dict() instead") from None
    except Exception as exc:  # torch.load fails on foreign bytes in many ways (EOFError, IndexError, ...)
        raise CheckpointError(f"{path.name} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"upload a .safetensors file or a torch.save(model.state_dict()) file") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name} does not hold a state dict (a mapping of names to tensors); "
                              f"save it with torch.save(model.state_dict(), PATH)")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; mismatches name the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        def few(items):
            return ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if misshaped:
            parts.append(f"wrong shapes (file vs model): {few(misshaped)}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts) +
                              ". Pick the architecture the checkpoint was saved from")
    model.load_state_dict(state, strict=True)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, metadata: dict, dtype=torch.float16) -> Path:
    """Save ``model``'s weights as safetensors with ``metadata`` under the ``stitchlab`` key.

    Floating-point tensors are stored as ``dtype`` (fp16 halves the zoo's size; BatchNorm's
    integer counter stays int64). Written to a temporary file, then renamed: never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    os.replace(tmp, path)
    return path
