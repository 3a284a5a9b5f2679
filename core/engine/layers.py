"""Layers of a network, and cutting a network at a layer.

A *layer* is an activation: the output of one node of the network's torch.fx graph, named
as torchvision's ``get_graph_node_names`` names it (``layer1.0.relu_1``). Blocks can also be
named by their module (``layer1.0``: the block's output), which is how :func:`list_layers`
names them by default.

Two cuts make a stitch possible:

* :func:`sender_prefix` runs a network only up to the layers asked for (torchvision's
  ``create_feature_extractor``; one pass yields every requested layer).
* :func:`receiver_suffix` runs a network *from* a layer: its graph with that activation
  replaced by an input, and everything before it removed, so no receiver prefix is ever
  computed. No library does this, hence the ~40 lines of graph surgery below.

A layer can be cut only where the whole rest of the network depends on the input solely
through it (a *cut point*). Inside a residual block the skip connection crosses every
node, so only block boundaries are cut points there; :func:`list_layers` lists only cut
points, and asking for anything else raises a ``ValueError`` that says why.

Models torch.fx cannot trace (Python control flow that depends on the data) cannot be cut:
:class:`UntraceableError` says so and why. (A hook-based fallback would have to run the whole
receiver up to layer j on every batch and could not tell whether a skip connection crosses the
cut, so StitchLab refuses rather than stitch such a model wrongly.)
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs, create_feature_extractor

from core.errors import UntraceableError

__all__ = ["Layer", "list_layers", "resolve_layer", "sender_prefix", "receiver_suffix", "LayerGraph", "layer_graph"]

_EXAMPLE_BATCH = 3  # an odd batch size tells the batch dimension apart from a weight's dimensions
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class Layer:
    """One stitchable activation.

    ``name`` is what you pass to the rest of the API; ``node`` the fx node whose output it is;
    ``shape`` the per-example shape (no batch dimension); ``kind`` is ``"map"`` for (C, H, W),
    ``"tokens"`` for (T, D), ``"vector"`` for (D,); ``depth`` its position in execution order.
    """

    name: str
    node: str
    shape: tuple[int, ...]
    kind: str
    depth: int


def _kind(shape: tuple[int, ...]) -> str:
    return {3: "map", 2: "tokens", 1: "vector"}.get(len(shape), "other")


class LayerGraph:
    """A network's traced graph, with shapes, cut points and default layers (cached per module)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
        self.input_shape = tuple(input_shape)
        was_training = module.training
        module.eval()
        try:
            tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
            try:
                graph = tracer.trace(module)
            except Exception as exc:  # fx raises many types for untraceable code
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise UntraceableError(
                    f"{type(module).__name__} cannot be cut into layers: torch.fx cannot trace it "
                    f"({type(exc).__name__}: {first}). StitchLab cuts networks through their traced graph; "
                    f"a model whose Python control flow depends on the input data cannot be stitched. "
                    f"Rewrite that branch with tensor operations (e.g. torch.where), or pick another model"
                    ) from None
            self.gm = fx.GraphModule(tracer.root, graph, type(module).__name__)
            self.qualname = {n: q for n, q in tracer.node_to_qualname.items()}
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            example = torch.randn(_EXAMPLE_BATCH, *self.input_shape, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ShapeProp(self.gm).propagate(example.to(device))
        finally:
            module.train(was_training)
        self.nodes = list(self.gm.graph.nodes)
        self.by_qualname = {q: n for n, q in self.qualname.items()}
        self.placeholder = next(n for n in self.nodes if n.op == "placeholder")
        self.output = next(n for n in self.nodes if n.op == "output")
        self.cut_layers = self._find_cut_points()
        self.default_layers = self._find_default_layers(module)

    # --- shapes and cut points -------------------------------------------------------------
    def _shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape") or len(meta.shape) < 2 or meta.shape[0] != _EXAMPLE_BATCH:
            return None
        return tuple(int(s) for s in meta.shape[1:])

    def _bypasses(self, cut: fx.Node) -> bool:
        """Does the output depend on the input through a path that avoids ``cut``?"""
        reaches: dict[fx.Node, bool] = {}
        for node in self.nodes:
            if node is cut:
                reaches[node] = False
            elif node is self.placeholder:
                reaches[node] = True
            else:
                reaches[node] = any(reaches.get(a, False) for a in node.all_input_nodes)
        return reaches[self.output]

    def _find_cut_points(self) -> list[Layer]:
        layers = []
        for depth, node in enumerate(self.nodes):
            if node.op in ("placeholder", "output") or node not in self.qualname:
                continue
            shape = self._shape(node)
            if shape is None or _kind(shape) == "other" or self._bypasses(node):
                continue
            layers.append(Layer(self.qualname[node], self.qualname[node], shape, _kind(shape), depth))
        return layers

    # --- default layers: stem + block outputs ------------------------------------------------
    def _last_node_of(self, module_name: str) -> fx.Node | None:
        last = None
        for node in self.nodes:
            q = self.qualname.get(node)
            if q is not None and (q == module_name or q.startswith(module_name + ".")):
                last = node
        return last

    def _find_default_layers(self, module: nn.Module) -> list[Layer]:
        cut_by_node = {layer.node: layer for layer in self.cut_layers}
        blocks = []
        for name in _block_modules(module):
            node = self._last_node_of(name)
            if node is not None and self.qualname[node] in cut_by_node:
                cut = cut_by_node[self.qualname[node]]
                blocks.append(Layer(name, cut.node, cut.shape, cut.kind, cut.depth))
        if len(blocks) < 2:  # no block structure (e.g. torchvision's VGG): activations and pools
            picked = []
            for layer in self.cut_layers:
                node = self.by_qualname[layer.node]
                if node.op == "call_module" and isinstance(module.get_submodule(node.target), _ACTIVATIONS + _POOLS):
                    picked.append(layer)
            return picked or list(self.cut_layers)
        first = min(blocks, key=lambda b: b.depth).name
        first_start = min(i for i, n in enumerate(self.nodes)
                          if self.qualname.get(n, "") == first or self.qualname.get(n, "").startswith(first + "."))
        stems = [c for c in self.cut_layers if c.depth < first_start]
        if stems:
            stem = stems[-1]
            top = stem.node.split(".")[0]
            node = self._last_node_of(top)
            name = top if node is not None and self.qualname[node] == stem.node else stem.node
            blocks.insert(0, Layer(name, stem.node, stem.shape, stem.kind, stem.depth))
        return sorted(blocks, key=lambda b: b.depth)

    # --- name resolution ---------------------------------------------------------------------
    def resolve(self, name: str, model_label: str = "the model") -> Layer:
        for layer in self.default_layers + self.cut_layers:
            if layer.name == name or layer.node == name:
                return layer
        node = self._last_node_of(name) if name else None
        if node is not None:
            for layer in self.cut_layers:
                if layer.node == self.qualname[node]:
                    return Layer(name, layer.node, layer.shape, layer.kind, layer.depth)
        known = self.by_qualname.get(name) is not None or node is not None
        defaults = ", ".join(layer.name for layer in self.default_layers[:12])
        more = "..." if len(self.default_layers) > 12 else ""
        if known:
            raise ValueError(
                f"layer {name!r} of {model_label} cannot be cut: the rest of the network also uses activations "
                f"from before it (a skip connection crosses it), or it is not a per-example tensor. "
                f"Stitch at a cut point such as {defaults}{more} (list_layers(model, all_nodes=True) lists all)")
        raise ValueError(f"unknown layer {name!r} of {model_label}: choose one of {defaults}{more} "
                         f"(see list_layers(model) or: python -m core layers MODEL)")


def _block_modules(module: nn.Module) -> list[str]:
    """Qualified names of 'blocks': composite modules held in a Sequential/ModuleList,
    outermost first, not descending into a block (so a block's own insides are not blocks)."""
    containers = (nn.Sequential, nn.ModuleList)
    found: list[str] = []

    def visit(mod: nn.Module, prefix: str):
        for child_name, child in mod.named_children():
            name = f"{prefix}{child_name}"
            composite = any(True for _ in child.children())
            holds_blocks = isinstance(child, containers) and any(
                any(True for _ in grandchild.children()) for grandchild in child.children())
            if isinstance(mod, containers) and composite and not holds_blocks:
                found.append(name)
                continue
            visit(child, name + ".")

    visit(module, "")
    return found


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def layer_graph(module: nn.Module, input_shape: tuple[int, ...]) -> LayerGraph:
    """The (cached) :class:`LayerGraph` of ``module`` for inputs of ``input_shape`` (C, H, W)."""
    per_shape = _CACHE.setdefault(module, {})
    key = tuple(input_shape)
    if key not in per_shape:
        per_shape[key] = LayerGraph(module, key)
    return per_shape[key]


def _unpack(model, input_shape):
    """Accept a :class:`core.models.network.Network` or a plain module with ``input_shape``."""
    if hasattr(model, "module") and hasattr(model, "input_shape"):
        return model.module, tuple(input_shape or model.input_shape), model.name
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a Network or an nn.Module, got {type(model).__name__}")
    if input_shape is None:
        raise ValueError("input_shape (C, H, W) is needed for a plain nn.Module, e.g. input_shape=(1, 32, 32)")
    return model, tuple(input_shape), type(model).__name__


def list_layers(model, input_shape=None, all_nodes: bool = False) -> list[Layer]:
    """Stitchable layers of ``model`` (a Network, or an nn.Module with ``input_shape``), in depth order.

    By default the stem and every block output (the layers the seed paper stitches); with
    ``all_nodes=True`` every cut point of the graph.

    Example::

        >>> [(l.name, l.shape) for l in list_layers(load_model("zoo/resnet_1111-s0"))][:2]
        [('stem', (16, 32, 32)), ('layer1.0', (16, 32, 32))]
    """
    module, shape, _ = _unpack(model, input_shape)
    graph = layer_graph(module, shape)
    return list(graph.cut_layers if all_nodes else graph.default_layers)


def resolve_layer(model, name: str, input_shape=None) -> Layer:
    """The :class:`Layer` called ``name`` (a listed name, a node name or a module name)."""
    module, shape, label = _unpack(model, input_shape)
    return layer_graph(module, shape).resolve(name, label)


class SenderPrefix(nn.Module):
    """Runs a network up to the given layers only; returns their activations as a list."""

    def __init__(self, module: nn.Module, layers: list[Layer]):
        super().__init__()
        self.names = [layer.node for layer in layers]
        unique = list(dict.fromkeys(self.names))
        self.extractor = create_feature_extractor(module, return_nodes={n: n for n in unique},
                                                  suppress_diff_warning=True)
        self.extractor.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.extractor(x)
        return [out[n] for n in self.names]


def sender_prefix(model, layers, input_shape=None) -> SenderPrefix:
    """A module mapping inputs to the activations at ``layers`` (names or :class:`Layer`s)."""
    module, shape, label = _unpack(model, input_shape)
    graph = layer_graph(module, shape)
    resolved = [layer if isinstance(layer, Layer) else graph.resolve(layer, label) for layer in layers]
    return SenderPrefix(module, resolved)


def receiver_suffix(model, layer, input_shape=None) -> fx.GraphModule:
    """A module mapping an activation at ``layer`` to the network's output.

    The returned GraphModule shares the network's weights; it computes nothing that comes
    before ``layer``.
    """
    module, shape, label = _unpack(model, input_shape)
    graph = layer_graph(module, shape)
    layer = layer if isinstance(layer, Layer) else graph.resolve(layer, label)
    cut = graph.by_qualname[layer.node]

    # Nodes the output needs, walking back from it and stopping at the cut.
    needed, stack = set(), [graph.output]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        if node is not cut:
            stack.extend(node.all_input_nodes)
    if graph.placeholder in needed:  # list_layers never offers such a layer; a node name might
        raise ValueError(f"layer {layer.name!r} of {label} is not a cut point: the output also depends on "
                         f"the input through another path")

    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: new.placeholder("activation")}
    for node in graph.nodes:
        if node in needed and node is not cut:
            env[node] = new.node_copy(node, lambda a: env[a])
    suffix = fx.GraphModule(graph.gm, new, f"{type(module).__name__}From_{layer.name.replace('.', '_')}")
    suffix.eval()
    return suffix
