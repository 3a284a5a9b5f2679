"""StitchLab's engine: a plain Python package (it never imports streamlit).

The public names, in the order a notebook uses them::

    net = load_model("zoo/resnet_1111-s0")        # models: the registry
    layers = list_layers(net)                     # layers: what can be cut
    stitched = stitch(a, b, "layer3.0", "stem")   # stitch: one stitched network
    result = run_grid({...})                      # grid: a whole grid, fused

Names are imported on first use, so ``import core.store`` or ``core.zoo`` (what the
dashboard's first paint needs) does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "METHODS": "attribution", "METHOD_LABELS": "attribution", "Attribution": "attribution",
    "attribute": "attribution", "compare": "attribution",
    "StitchedClassifier": "stitched", "load_stitched": "stitched",
    "MinibatchCKA": "cka", "cka_matrix": "cka",
    "CkaResult": "cka_models", "model_cka": "cka_models", "stitch_cka": "cka_models",
    "DatasetInfo": "data", "ImageSet": "data", "load_dataset": "data",
    "Cancelled": "errors", "CheckpointError": "errors", "NotStitchable": "errors", "StoreError": "errors",
    "Progress": "progress", "Status": "progress",
    "RECIPES": "recipes", "grid_config": "recipes",
    "CONTROLS": "grid", "MODES": "grid", "GridConfig": "grid",
    "GridResult": "grid", "load_grid": "grid", "run_grid": "grid", "run_grids": "grid",
    "Layer": "layers", "list_layers": "layers", "receiver_suffix": "layers", "resolve_layer": "layers",
    "sender_prefix": "layers",
    "Network": "models", "list_models": "models", "load_model": "models",
    "Stitch": "stitches", "StitchedNetwork": "stitches", "make_stitch": "stitches",
    "stitch": "stitches",
    "Store": "store",
    "SweepConfig": "sweep", "commit_grid": "sweep", "depth_table": "sweep", "expand_models": "sweep",
    "paper_effect": "sweep", "run_sweep": "sweep", "sweep_status": "sweep", "sweep_summary": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
