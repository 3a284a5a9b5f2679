"""A stitched network dressed as a :class:`core.models.network.Network`, and rebuilding a stored one.

Attributions (and anything else that takes a Network) need ``prepare``, ``module``,
``num_classes`` and ``name``; :class:`StitchedClassifier` gives a
:class:`core.engine.stitches.StitchedNetwork` those. :func:`load_stitched` rebuilds the trained stitch
of one cell of a stored grid, on the networks that grid actually used.
"""

from __future__ import annotations

import torch
from torch import nn

from core.attribution.hygiene import left_as_found, node_module

__all__ = ["StitchedClassifier", "load_stitched"]


# --- a stitched network dressed as a Network ------------------------------------------------------
class StitchedClassifier(nn.Module):
    """A :class:`core.engine.stitches.StitchedNetwork` with a Network's interface.

    ``prepare`` is the sender's preprocessing, ``module`` the stitched network (which takes the
    sender's normalised input), ``num_classes`` the receiver's. Give ``receiver`` and the two
    layer names when you have them: Grad-CAM then accepts ``"sender:NAME"`` and receiver layer
    names, and attribution also locks the receiver's module (the stitched network shares it).

    Example::

        >>> net = StitchedClassifier(a, stitch(a, b, "layer2.0", "layer2.0"), b, "layer2.0", "layer2.0")
        >>> net(torch.rand(4, 1, 32, 32)).shape
        torch.Size([4, 10])
    """

    def __init__(self, sender, stitched: nn.Module, receiver=None, sender_layer: str | None = None,
                 receiver_layer: str | None = None, name: str | None = None):
        super().__init__()
        self.module = stitched
        self.sender, self.receiver = sender, receiver
        self.sender_layer, self.receiver_layer = sender_layer, receiver_layer
        self.input_shape, self.mean, self.std = sender.input_shape, sender.mean, sender.std
        self.dataset = getattr(receiver, "dataset", None) or getattr(sender, "dataset", None)
        self.run: dict | None = None  # where load_stitched found it: id, sender, receiver, control
        if receiver is not None:
            self.num_classes = receiver.num_classes
        else:  # ask the network itself, leaving it as found
            with left_as_found([stitched]), torch.no_grad():
                device = next((p.device for p in stitched.parameters()), torch.device("cpu"))
                self.num_classes = int(stitched(torch.zeros(1, *self.input_shape, device=device)).shape[-1])
        receiver_name = receiver.name if receiver is not None else "receiver"
        self.name = name or f"{sender.name}:{sender_layer or '?'} → {receiver_name}:{receiver_layer or '?'}"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the sender's normalised input."""
        return self.sender.prepare(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.module(self.prepare(images))

    def gradcam_module(self, layer: str | None) -> tuple[nn.Module, str]:
        """The module Grad-CAM hooks for ``layer``: ``None``/``"stitch"`` (the stitch, whose
        output lives in the receiver's space), ``"sender:NAME"`` (a sender layer at or before
        the cut) or ``NAME`` (a receiver layer after it)."""
        stitch_module = getattr(self.module, "stitch", None)
        if layer in (None, "stitch"):
            if stitch_module is None:
                raise ValueError(f"{self.name} has no 'stitch' submodule; name a layer for Grad-CAM")
            return stitch_module, "stitch"
        if not isinstance(layer, str):
            raise ValueError(f"a Grad-CAM layer is a name such as 'stitch' or 'sender:layer2.0', got {layer!r}")
        side, _, name = layer.rpartition(":") if layer.startswith("sender:") else ("receiver", "", layer)
        net, cut = (self.sender, self.sender_layer) if side == "sender" else (self.receiver, self.receiver_layer)
        if net is None or cut is None:
            raise ValueError(f"Grad-CAM at {layer!r} needs the {side} network and layer: build the "
                             f"StitchedClassifier with receiver=, sender_layer= and receiver_layer= "
                             f"(load_stitched does), or use layer='stitch'")
        from core.engine.layers import layer_graph

        cut_depth = layer_graph(net.module, net.input_shape).resolve(cut, net.name).depth
        if side == "receiver" and name == cut:  # the receiver's cut layer *is* the stitch's output
            return stitch_module, "stitch"
        span = (-1, cut_depth) if side == "sender" else (cut_depth, None)
        where = (f"in {self.name} (of the {side}'s layers only those "
                 f"{'at or before' if side == 'sender' else 'after'} {cut!r} run there)")
        return node_module(net, name, span, where), layer


def load_stitched(store, run_id: str, sender_layer: str, receiver_layer: str, device="cpu") -> StitchedClassifier:
    """Rebuild the trained stitch of cell ``(sender_layer, receiver_layer)`` of a stored grid run.

    The networks are the ones the run used (random copies under a control), shared with
    :func:`core.models.network.cached_model`; the stitch is frozen.

    Example::

        >>> net = load_stitched(Store(), "3f2a9c1b0d4e", "layer3.0", "layer2.0")
        >>> attribute(net, images, method="gradcam").raw.shape
        (4, 32, 32)
    """
    from core.device import resolve_device
    from core.engine.grid import GridConfig, load_stitch, networks_of
    from core.engine.layers import receiver_suffix, resolve_layer, sender_prefix
    from core.engine.stitches import StitchedNetwork
    from core.models.network import freeze

    run = store.get_run(run_id)  # KeyError naming the run and how to list runs
    if run["kind"] != "grid":
        raise ValueError(f"run {run_id!r} is a {run['kind']!r} run, not a stitching grid; pick a grid run "
                         f"(python -m core runs)")
    known = GridConfig.__dataclass_fields__
    config = GridConfig.from_dict({k: v for k, v in run["config"].items() if k in known})
    cells = {(c["sender_layer"], c["receiver_layer"]): c for c in store.cells(run_id)}
    cell = cells.get((sender_layer, receiver_layer))
    if cell is None:
        done = [f"{i}->{j}" for (i, j), c in cells.items() if c["status"] == "done"]
        raise KeyError(f"run {run_id!r} has no cell {sender_layer} -> {receiver_layer}; its finished cells are "
                       f"{', '.join(done[:12]) or 'none'}{'...' if len(done) > 12 else ''}")
    if cell["status"] != "done":
        reason = cell["details"].get("reason") or "no reason stored"
        raise ValueError(f"cell {sender_layer} -> {receiver_layer} of run {run_id!r} is {cell['status']!r} "
                         f"({reason}); it has no trained stitch to attribute, pick a cell that is 'done'")
    blob = store.cell_stitch(run_id, sender_layer, receiver_layer)
    if not blob:
        raise ValueError(f"cell {sender_layer} -> {receiver_layer} of run {run_id!r} stored no stitch weights; "
                         f"re-run the grid to store them")
    device = resolve_device(device)
    sender, receiver, _ = networks_of(config, device)
    s_layer, r_layer = resolve_layer(sender, sender_layer), resolve_layer(receiver, receiver_layer)
    stitch_module = freeze(load_stitch(cell["details"], blob).to(device))
    network = StitchedNetwork(sender_prefix(sender, [s_layer]), stitch_module, receiver_suffix(receiver, r_layer))
    net = StitchedClassifier(sender, network.eval(), receiver, sender_layer, receiver_layer)
    net.dataset = config.dataset
    net.run = {"id": run_id, "sender": config.sender, "receiver": config.receiver, "control": config.control}
    return net
