"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``.

A checkpoint from a stranger is data, never code: pickles are only ever opened with
``weights_only=True``, which refuses any object that is not a tensor or a plain container,
so a planted ``__reduce__`` payload is rejected before it runs.

StitchLab's own checkpoints are safetensors files whose metadata carries the architecture
config and input description (key ``stitchlab``), so ``file:PATH`` needs nothing else. A file
is held to what it claims before any network is built (:func:`check_metadata`,
:func:`build_from_state`), and weights holding NaN or infinities are refused when read.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError

__all__ = ["read_checkpoint", "save_checkpoint", "apply_state_dict", "build_from_state", "check_metadata",
           "max_upload_bytes", "CheckpointError"]

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


def read_checkpoint(path: str | os.PathLike, name: str | None = None) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Return ``(state_dict, stitchlab_metadata_or_None)`` from a safetensors or torch file.

    ``name`` is what error messages call the file (default: its file name; an upload passes the
    name it was uploaded as). Raises :class:`CheckpointError` for a missing, oversized, truncated
    or non-weights file, in one line that says what to upload instead.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    name = name or path.name
    size = path.stat().st_size
    limit = max_upload_bytes()
    if size > limit:
        raise CheckpointError(f"checkpoint {name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit "
                              f"(raise STITCHLAB_MAX_CHECKPOINT_MB to allow it)")
    if size == 0:
        raise CheckpointError(f"checkpoint {name} is empty")
    if _is_safetensors(path):
        state, meta = _read_safetensors(path, name)
    else:
        state, meta = _read_torch(path, name), None
    _refuse_non_finite(state, name)
    return state, meta


def _refuse_non_finite(state: dict[str, torch.Tensor], name: str) -> None:
    """NaN or infinite weights load and run, and every stitch into them scores at chance as if it
    worked: refused here, naming the first such tensor."""
    broken = [key for key, value in state.items()
              if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())]
    if broken:
        more = f" (and {len(broken) - 1} more tensors)" if len(broken) > 1 else ""
        raise CheckpointError(f"{name} holds NaN or infinite weights in {broken[0]}{more}: the network is broken "
                              f"(did its training diverge?); save weights that are all finite numbers")


def _read_safetensors(path: Path, name: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        # The library's reason (HeaderTooLarge, MetadataIncompleteBuffer, ...) names its internals, not a fix.
        raise CheckpointError(f"{name} looks like a safetensors file but cannot be read: it is truncated or "
                              f"damaged. Save it again with safetensors.torch.save_file and upload that") from None
    meta = None
    if METADATA_KEY in metadata:
        try:
            meta = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{name} has unreadable StitchLab metadata (its '{METADATA_KEY}' entry is not a "
                                  f"JSON object of settings); save the weights again with "
                                  f"safetensors.torch.save_file, without metadata, and pick their architecture "
                                  f"when uploading") from None
    return tensors, meta


def _numbers(value, length: int | None = None) -> bool:
    """A list of finite numbers (of ``length`` items, if given)."""
    return (isinstance(value, (list, tuple)) and bool(value) and (length is None or len(value) == length)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


# The largest input a checkpoint may ask to be fed: a check runs the network once on a blank image of it.
_MAX_SIDE = 1024


def check_metadata(meta: dict, source: str, config_from_file: bool = True) -> dict:
    """Return ``meta`` if every StitchLab key it holds has a usable value; else raise
    :class:`CheckpointError` in one line naming the key, what it should hold and what it holds.

    ``config`` is held to :func:`core.models.architectures.check_config`; ``input_shape`` to
    (channels, height, width) that fit the config; ``mean`` and ``std`` to finite numbers per
    channel, ``std`` above zero. ``config_from_file`` False: the config was given, not read
    (the message then does not blame the file's metadata).
    """
    from core.models.architectures import check_config, input_channels

    def refuse(message: str, from_file: bool = True) -> CheckpointError:
        return CheckpointError(f"{source}'s metadata: {message}" if from_file else f"{source}: {message}")

    if "config" in meta and not isinstance(meta["config"], dict):
        raise refuse(f"key 'config' must be an object such as {{\"arch\": \"resnet\", \"blocks\": [1, 1, 1, 1]}}, "
                     f"got {_shown(meta['config'])}", config_from_file)
    if "config" in meta:
        try:
            check_config(meta["config"])
        except ValueError as exc:
            raise refuse(str(exc), config_from_file) from None
    shape = meta.get("input_shape")
    if shape is not None:
        if not (_numbers(shape, 3) and all(isinstance(v, int) for v in shape) and 1 <= shape[0] <= 256
                and all(1 <= v <= _MAX_SIDE for v in shape[1:])):
            raise refuse(f"key 'input_shape' must be [channels, height, width] of whole numbers (height and width "
                         f"from 1 to {_MAX_SIDE}), got {_shown(shape)}")
        if "config" in meta and shape[0] != input_channels(meta["config"]):
            raise refuse(f"key 'input_shape' says {shape[0]} channels but the config's network takes "
                         f"{input_channels(meta['config'])}")
    channels = shape[0] if shape is not None else input_channels(meta["config"]) if "config" in meta else None
    for key in ("mean", "std"):
        if key in meta and not (_numbers(meta[key]) and len(meta[key]) in (1, channels or len(meta[key]))
                                and (key == "mean" or min(meta[key]) > 0)):
            raise refuse(f"key '{key}' must be one finite number per input channel"
                         + (" (all above zero)" if key == "std" else "") + f", got {_shown(meta[key])}")
    if "dataset" in meta and not (isinstance(meta["dataset"], str) and 0 < len(meta["dataset"]) <= 200):
        raise refuse(f"key 'dataset' must be a dataset's name such as 'fashion-mnist', got {_shown(meta['dataset'])}")
    return meta


def _shown(value) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=lambda v: type(v).__name__)
    return text if len(text) <= 60 else text[:57] + "..."


# torch.save's two formats: a zip archive (since torch 1.6) and, before it, a pickle led by this magic number.
_TORCH_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
# The one useful fact in torch's long weights-only refusal: which Python object the file wanted to build.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]{1,200})")


def _read_torch(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails on foreign bytes in many ways (EOFError, IndexError, ...)
        raise _torch_load_error(path, name, exc) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{name} does not hold a state dict (a mapping of names to tensors); "
                              f"save it with torch.save(model.state_dict(), PATH)")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _torch_load_error(path: Path, name: str, exc: Exception) -> CheckpointError:
    """One line for a file ``torch.load(weights_only=True)`` refused. torch's own text is many lines
    with ANSI codes and advice to load unsafely; Python's (``pop from empty list``) says nothing."""
    wanted = _UNSUPPORTED_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    if wanted:
        return CheckpointError(
            f"{name} was refused: it holds a pickled {wanted.group(1)} object, not only tensors (a whole model "
            f"saved with torch.save(model)?), and StitchLab only opens weights-only checkpoints. Save the "
            f"weights with torch.save(model.state_dict(), PATH) and upload that file")
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    if head.startswith(_TORCH_ZIP_MAGIC) or head == _TORCH_LEGACY_MAGIC:
        return CheckpointError(f"{name} looks like a torch.save file but cannot be read: it is truncated or damaged. "
                               f"Save it again with torch.save(model.state_dict(), PATH) and upload that")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle.dump's header
        return CheckpointError(f"{name} is a plain Python pickle, not a torch.save file of tensors, and StitchLab only "
                               f"opens weights-only checkpoints. Save the weights with "
                               f"torch.save(model.state_dict(), PATH) and upload that file")
    return CheckpointError(f"{name} is not a readable checkpoint (neither a safetensors file nor a torch.save "
                           f"file); upload a .safetensors file or a torch.save(model.state_dict()) file")


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; mismatches name the missing, unexpected and mis-shaped keys."""
    _refuse_misfit(type(model).__name__, {k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)
    model.load_state_dict(state, strict=True)


def build_from_state(config: dict, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The network ``config`` describes, holding ``state``.

    The config is checked and its tensors' shapes compared with ``state``'s before any weight is
    allocated (laid out on the meta device): a checkpoint whose metadata claims a network larger
    than its tensors is refused at once, not after building it. Raises :class:`CheckpointError`
    naming the bad key, or the missing, unexpected and mis-shaped tensors.
    """
    from core.models.architectures import build_architecture, state_shapes

    try:
        laid_out = state_shapes(config)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    if laid_out is not None:
        _refuse_misfit(*laid_out, state, source)
    module = build_architecture(config)  # fits the file, so no larger than the file
    apply_state_dict(module, state, source)
    return module


def _refuse_misfit(class_name: str, shapes: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor],
                   source: str) -> None:
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {shape}" for k, shape in shapes.items()
                 if k in state and tuple(state[k].shape) != shape]
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
        raise CheckpointError(f"{source} does not fit {class_name}: " + "; ".join(parts) +
                              ". Pick the architecture the checkpoint was saved from")


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
