"""StitchLab's engine: a plain Python package (it never imports streamlit).

The public names, in the order a notebook uses them::

    net = load_model("zoo/resnet_1111-s0")        # models: the registry
    layers = list_layers(net)                     # layers: what can be cut
    stitched = stitch(a, b, "layer3.0", "stem")   # stitch: one stitched network
    result = run_grid({...})                      # grid: a whole grid, fused
"""

from .data import DatasetInfo, ImageSet, load_dataset
from .grid import CONTROLS, MODES, PRESETS, Cancelled, GridConfig, GridResult, load_grid, run_grid
from .layers import Layer, list_layers, receiver_suffix, resolve_layer, sender_prefix
from .models import Network, list_models, load_model
from .stitch import NotStitchable, Stitch, StitchedNetwork, make_stitch, stitch
from .store import Store, StoreError

__all__ = [
    "CONTROLS", "MODES", "PRESETS", "Cancelled", "DatasetInfo", "GridConfig", "GridResult", "ImageSet", "Layer",
    "Network", "NotStitchable", "Stitch", "StitchedNetwork", "Store", "StoreError", "list_layers", "list_models",
    "load_dataset", "load_grid", "load_model", "make_stitch", "receiver_suffix", "resolve_layer", "run_grid",
    "sender_prefix", "stitch",
]
