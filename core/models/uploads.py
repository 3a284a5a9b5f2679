"""Checkpoints users upload: validated, then kept as StitchLab safetensors files.

An upload is read as data only (safetensors, or ``torch.load(weights_only=True)``), its
metadata checked key by key, loaded strictly into the architecture it claims (its own metadata,
or the one the user picked; the claim is held to its tensors' shapes before anything is built),
run once on a blank image to prove it works, and only then saved, with its architecture in
the metadata, under ``$STITCHLAB_HOME/uploads``, where the registry finds it as ``file:PATH``.

An upload under a name already taken is refused (:class:`UploadExists`) unless ``replace=True``:
the dashboard asks first. Replacing keeps every stored run of the old weights, since runs are
keyed by the weights' fingerprint, not by the name.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from core import paths
from core.errors import CheckpointError

__all__ = ["save_upload", "list_uploads", "uploads_dir", "default_name", "upload_path", "UploadExists",
           "MAX_NAME_LENGTH"]

# Well under the 255 bytes most filesystems allow a file name (``NAME.safetensors.tmp`` while it is
# written), and still readable in the sidebar.
MAX_NAME_LENGTH = 100


class UploadExists(CheckpointError):
    """A checkpoint is kept under this name already; ``save_upload(..., replace=True)`` replaces it."""

    def __init__(self, name: str):
        super().__init__(f"a checkpoint named {name} exists already: replace it, or give this one another name")
        self.name = name


def uploads_dir() -> Path:
    path = paths.home() / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_uploads() -> list[str]:
    """Registry names of the uploaded models, newest first."""
    files = sorted(uploads_dir().glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [f"file:{p}" for p in files]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")


def default_name(filename: str) -> str:
    """The name an upload gets unless the user types another: its file name without the extension."""
    return _safe(Path(filename).name.rsplit(".", 1)[0])


def upload_path(name: str) -> Path:
    """Where the upload called ``name`` is kept (it may not exist yet); ``CheckpointError`` for a name
    that cannot be a file name."""
    safe = _safe(name)
    if not safe:
        raise CheckpointError(f"give the model a name of letters, digits, '-' or '_' (got {name!r})")
    if len(safe) > MAX_NAME_LENGTH:
        raise CheckpointError(f"the name is {len(safe)} characters long; shorten it to at most {MAX_NAME_LENGTH}")
    return uploads_dir() / f"{safe}.safetensors"


def save_upload(data: bytes, filename: str, name: str | None = None, config: dict | None = None,
                like: str | None = None, replace: bool = False) -> str:
    """Validate an uploaded checkpoint and keep it; returns its registry name (``file:...``).

    ``name`` is what it is kept as (empty: :func:`default_name` of ``filename``). ``config`` is the
    architecture for a plain state dict; ``like`` names a zoo model whose architecture, input and
    normalisation the checkpoint shares (what the dashboard offers). An existing upload of that
    name raises :class:`UploadExists` before anything is read, unless ``replace``.
    Raises :class:`core.models.checkpoints.CheckpointError` with the reason and the fix.
    """
    target = upload_path((name or "").strip() or default_name(filename))
    if target.exists() and not replace:
        raise UploadExists(target.stem)
    import torch  # here, not above: listing uploads (the sidebar) must not pay for torch

    from core.models.architectures import input_channels, with_class_count
    from core.models.checkpoints import (
        build_from_state,
        check_metadata,
        max_upload_bytes,
        read_checkpoint,
        save_checkpoint,
    )
    from core.models.zoo import zoo_entry

    if len(data) > max_upload_bytes():
        raise CheckpointError(f"{filename} is {len(data) / 2**20:.1f} MB, over the "
                              f"{max_upload_bytes() / 2**20:.0f} MB upload limit (STITCHLAB_MAX_CHECKPOINT_MB)")
    with tempfile.TemporaryDirectory(dir=paths.home()) as tmp:
        raw = Path(tmp) / "upload"  # not the browser's file name, which may be too long for this filesystem
        raw.write_bytes(data)
        state, meta = read_checkpoint(raw, name=Path(filename).name)
    meta = dict(meta or {})
    if like:
        entry = zoo_entry(like.removeprefix("zoo/"))
        meta.update({k: entry[k] for k in ("config", "dataset", "input_shape", "mean", "std")})
    if config:
        meta["config"] = config
    if "config" not in meta:
        raise CheckpointError(f"{filename} does not say which architecture it is: pick the zoo model whose "
                              f"architecture it was trained with")
    # Every key checked, and the config's size held to the file's tensors, before anything is built.
    check_metadata(meta, filename, config_from_file=not (like or config))
    meta["config"] = with_class_count(meta["config"], state)
    module = build_from_state(meta["config"], state, filename)
    module.eval()
    shape = tuple(meta.get("input_shape", (input_channels(meta["config"]), 32, 32)))
    try:
        with torch.no_grad():
            logits = module(torch.zeros(1, *shape))
    except Exception as exc:
        raise CheckpointError(f"{filename} loads but does not run on {shape} inputs ({exc})") from None
    meta.setdefault("dataset", "fashion-mnist")
    meta.setdefault("input_shape", list(shape))
    meta["num_classes"] = int(logits.shape[-1])
    meta["uploaded_as"] = Path(filename).name
    from core.engine.layers import list_layers

    # Its layers, as the zoo's manifest records them: the dashboard lists them without loading it.
    meta["layers"] = [{"name": lay.name, "shape": list(lay.shape), "kind": lay.kind}
                      for lay in list_layers(module, shape)]
    save_checkpoint(module, target, meta, dtype=torch.float32)  # replaces atomically: never half-written
    return f"file:{target}"
