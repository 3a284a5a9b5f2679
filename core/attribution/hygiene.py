"""Leaving models as they were found while captum hooks into them.

Models are shared between threads (the worker may serve several attribution jobs while other
code reads the same cached network), so attributions on one module are serialised by a
per-module lock (:func:`exclusive`); :func:`left_as_found` restores every module's train/eval
flag and removes every hook added inside it, in ``finally``, even when the forward pass raises.
:func:`node_module` finds the module a hook must sit on to see one layer's output.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from torch import nn

__all__ = ["lock_for", "exclusive", "left_as_found", "node_module", "roots_of"]

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_EXTRAS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def lock_for(module: nn.Module):
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


def roots_of(model) -> list[nn.Module]:
    """The modules an attribution on ``model`` runs through (a stitched network shares the
    sender's and receiver's leaf modules, so theirs are locked too)."""
    roots = [model.module] + [part.module for part in (getattr(model, "sender", None), getattr(model, "receiver", None))
                              if part is not None]
    return list({id(r): r for r in roots}.values())


@contextmanager
def exclusive(modules: list[nn.Module]):
    locks = sorted({id(lock): lock for lock in map(lock_for, modules)}.values(), key=id)  # one order: no deadlock
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in reversed(locks):
            lock.release()


@contextmanager
def left_as_found(roots: list[nn.Module]):
    """Eval mode inside; every module's train/eval flag restored and every hook added removed after."""
    modules = list({id(m): m for root in roots for m in root.modules()}.values())
    modes = [(m, m.training) for m in modules]
    hooks = [(m, {name: set(getattr(m, name, {})) for name in _HOOK_DICTS}) for m in modules]
    try:
        for root in roots:
            root.eval()  # BatchNorm in train mode would use batch statistics and update its buffers
        yield
    finally:
        for m, training in modes:
            m.training = training
        for m, before in hooks:
            for name, keys in before.items():
                added = [k for k in getattr(m, name, {}) if k not in keys]
                for k in added:
                    getattr(m, name).pop(k, None)
                    for extra in _HOOK_EXTRAS:
                        getattr(m, extra, {}).pop(k, None)


def node_module(net, name: str, span: tuple[int, int | None], where: str) -> nn.Module:
    """The module whose *last* call in the graph nodes with depth in ``(span[0], span[1]]``
    produces layer ``name`` of ``net`` (what a forward hook on it ends up holding)."""
    from core.engine.layers import layer_graph

    graph = layer_graph(net.module, net.input_shape)
    try:
        node = graph.by_qualname[graph.resolve(name, net.name).node]
    except ValueError:
        node = graph.by_qualname.get(name)
        if node is None:
            raise
    lo, hi = span[0], span[1] if span[1] is not None else len(graph.nodes)
    runs = graph.nodes[lo + 1:hi + 1]  # the nodes this (part of the) network runs
    maps = [lay.name for lay in graph.default_layers if lay.kind == "map" and lo < lay.depth <= hi]
    choices = ", ".join(maps[:10]) or "'stitch'"
    if not lo < graph.nodes.index(node) <= hi:
        raise ValueError(f"Grad-CAM layer {name!r} does not run {where}; choose one of {choices}")
    if node.op != "call_module":
        raise ValueError(f"Grad-CAM layer {name!r} of {net.name} is computed by a function ({node.target}), "
                         f"which no hook can reach; choose a module's output such as {choices}")
    calls = [n for n in runs if n.op == "call_module" and n.target == node.target]
    if calls[-1] is not node:
        raise ValueError(f"Grad-CAM layer {name!r} of {net.name}: module {node.target!r} runs {len(calls)} times "
                         f"per pass and a hook sees only its last call ({graph.qualname[calls[-1]]!r}); choose "
                         f"that, or the enclosing block, e.g. one of {choices}")
    return net.module.get_submodule(node.target)
