"""StitchLab's engine: a plain Python package (it never imports streamlit).

The public names, in the order a notebook uses them::

    net = load_model("zoo/resnet_1111-s0")        # models: the registry
    layers = list_layers(net)                     # layers: what can be cut
    stitched = stitch(a, b, "layer3.0", "stem")   # stitch: one stitched network
    result = run_grid({...})                      # grid: a whole grid, fused

Names are imported on first use, so ``import core.runs.store`` or ``core.models.zoo`` (what the
dashboard's first paint needs) does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "METHODS": "attribution.methods", "METHOD_LABELS": "attribution.methods", "Attribution": "attribution.methods",
    "attribute": "attribution.methods", "compare": "attribution.methods",
    "StitchedClassifier": "engine.stitched", "load_stitched": "engine.stitched",
    "MinibatchCKA": "similarity.cka", "cka_matrix": "similarity.cka",
    "CkaResult": "similarity.networks", "model_cka": "similarity.networks", "stitch_cka": "similarity.networks",
    "MEASURES": "similarity.measures", "SimilarityResult": "similarity.networks",
    "model_similarity": "similarity.networks",
    "DatasetInfo": "data.datasets", "ImageSet": "data.datasets", "load_dataset": "data.datasets",
    "Cancelled": "errors", "CheckpointError": "errors", "NotStitchable": "errors", "StoreError": "errors",
    "Progress": "progress", "Status": "progress",
    "RECIPES": "runs.recipes", "grid_config": "runs.recipes",
    "CONTROLS": "engine.grid", "MODES": "engine.grid", "GridConfig": "engine.grid",
    "GridResult": "engine.grid", "load_grid": "engine.grid", "run_grid": "engine.grid", "run_grids": "engine.grid",
    "Layer": "engine.layers", "list_layers": "engine.layers", "receiver_suffix": "engine.layers",
    "resolve_layer": "engine.layers", "sender_prefix": "engine.layers",
    "Network": "models.network", "list_models": "models.network", "load_model": "models.network",
    "Stitch": "engine.stitches", "StitchedNetwork": "engine.stitches", "make_stitch": "engine.stitches",
    "stitch": "engine.stitches",
    "Store": "runs.store",
    "SweepConfig": "runs.sweep", "commit_grid": "runs.sweep", "depth_table": "runs.sweep",
    "expand_models": "runs.sweep", "paper_effect": "runs.sweep", "run_sweep": "runs.sweep",
    "sweep_status": "runs.sweep", "sweep_summary": "runs.sweep",
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
