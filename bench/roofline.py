"""How fast could one step of a region run with the kernels this device has? A floor built from
the region's own operations, each replayed alone.

One repetition of a region (see :mod:`bench.profile`: ``train`` is one fused training step of
all 45 cells) runs under a dispatch-level recorder that notes every ATen operation with its
shapes, strides, dtypes and arguments. Then:

* **tensor operations** (convolutions forward and input gradient, cuDNN's and oneDNN's fused
  convolutions, matrix products, linear solves) are replayed one distinct call at a time, on
  random tensors of the same shapes and memory layout, and timed alone: the sum over the step,
  each call at its isolated speed, is the *tensor floor* (what the step would take if nothing
  else ran and every call ran as fast as it does on its own; not a strict bound, since a call
  can run faster inside the step, its operands still in cache, than alone);
* **every other operation** (ReLU gradients, residual adds, casts, copies, losses, the
  optimiser) is charged the bytes it must read and write (views free, broadcast operands by
  their distinct elements) at the device's copy bandwidth, measured in the same run: the
  *memory floor*, a lower bound for any implementation that keeps those operations unfused.

Against the step's measured time this says how much of it is the kernels' arithmetic, how much
memory traffic, and how much neither (launch gaps, host work). It also counts the calls that
compute or move data, about the kernels a GPU launches, which set a host-bound step's pace. The FLOPs of the tensor
operations are split by output channels and pixels, which locates the arithmetic in the
network (it does not depend on the device: the mix can be read on a CPU at a small batch).

    python -m bench.roofline train                  # the H100 target's grid (paper/ pair)
    python -m bench.roofline train --device cpu     # the zoo's width-16 pair on a CPU, batch 128
    python -m bench.roofline train --device cpu --sender paper/resnet_1111-s0 \\
        --receiver paper/resnet_2222-s0 --batch-size 16 --steps 1 --no-replay   # the width-64 mix

``--bf16`` runs a CPU in the GPU's dtypes (bf16 autocast), for the bytes the GPU moves.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import conv_flop_count, flop_registry

from core.device import resolve_device

from ._util import emit, seconds_per_call, sync
from .profile import region

# Operations replayed and timed alone (by overload packet name). Everything else is charged bytes.
CONVOLUTIONS = {"convolution", "convolution_backward", "cudnn_convolution", "cudnn_convolution_relu",
                "cudnn_convolution_add_relu", "_convolution_pointwise", "mkldnn_convolution"}
MATMULS = {"mm", "addmm", "addmm_", "bmm", "baddbmm", "baddbmm_"}
SOLVES = {"_linalg_solve_ex"}  # least squares' normal equations
# Operations that move no data beyond what ATen marks as views: allocations and aliases.
NO_DATA = {"_unsafe_view", "_reshape_alias", "alias", "detach", "lift_fresh", "empty", "empty_like",
           "empty_strided", "new_empty", "new_empty_strided", "set_"}


@dataclass(frozen=True)
class TensorSpec:
    """What a replay needs of a tensor: its geometry and type, not its values."""
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    device: str

    def distinct_bytes(self) -> int:
        """Bytes of distinct elements (a broadcast, stride-0 dimension is one element)."""
        count = math.prod(s for s, st in zip(self.shape, self.stride) if st != 0)
        return count * self.dtype.itemsize

    def make(self) -> torch.Tensor:
        t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)
        return t.normal_() if t.is_floating_point() else t.zero_()


def _spec(x):
    if isinstance(x, torch.Tensor):
        # opaque layouts (oneDNN's blocked tensors) have no strides: replay them contiguous
        stride = x.stride() if x.layout == torch.strided else _contiguous_strides(x.shape)
        return TensorSpec(tuple(x.shape), tuple(stride), x.dtype, str(x.device))
    return x


def _contiguous_strides(shape) -> tuple:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _freeze(x):
    """A hashable form of an argument tree (lists become tuples)."""
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    return x


class OpRecorder(TorchDispatchMode):
    """Counts every ATen call of a block by (operation, argument specs): ``calls[key] = count``."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()
        self.ops: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        key = (str(func), _freeze(tree_map(_spec, args)), _freeze(tree_map(_spec, kwargs)),
               _freeze(tree_map(_spec, out)))
        self.calls[key] += 1
        self.ops[key] = func
        return out


def kind(op_name: str) -> str:
    """"conv", "matmul", "solve" or "memory" for an overload name such as ``aten.mm.default``."""
    packet = op_name.split(".")[1] if "." in op_name else op_name
    if packet in CONVOLUTIONS:
        return "conv"
    if packet in SOLVES:
        return "solve"
    return "matmul" if packet in MATMULS else "memory"


def _tensors(tree) -> list[TensorSpec]:
    found = []
    tree_map(lambda v: found.append(v) if isinstance(v, TensorSpec) else None, tree)
    return found


def _meta(tree):
    """The specs of ``tree`` as meta tensors (shape, strides and dtype, no data) for torch's
    FLOP formulas."""
    return tree_map(lambda v: torch.empty_strided(v.shape, v.stride, dtype=v.dtype, device="meta")
                    if isinstance(v, TensorSpec) else v, tree)


def tensor_op_flops(op_name: str, args: list, out) -> tuple[int, tuple]:
    """FLOPs of one tensor operation and where it sits: ``(flops, (channels, height, width))`` for
    convolutions (the output map of a forward call, the input map of an input gradient),
    ``(flops, ("matmul",))`` for matrix products, ``(flops, ("solve",))`` for linear solves.

    torch's own formulas (``torch.utils.flop_counter``) wherever it has one; by hand only for the
    fused convolutions it has none for (their FLOPs are the plain convolution's) and the solves."""
    name = op_name.split(".")[1]
    if name in SOLVES:  # A (..., n, n) X = B (..., n, k): LU (2/3 n^3) and two triangular solves
        a, b = args[0], args[1]
        n, k = a.shape[-1], b.shape[-1] if len(b.shape) == len(a.shape) else 1
        return math.prod(a.shape[:-2]) * (2 * n**3 // 3 + 2 * n * n * k), ("solve",)
    packet = getattr(torch.ops.aten, name.rstrip("_"), None)  # addmm_ costs what addmm does
    if packet in flop_registry:
        flops = flop_registry[packet](*_meta(args), out_val=_meta(out))
        if name in MATMULS:
            return flops, ("matmul",)
        # a forward call sits at its output map, an input gradient at its input (grad_out, input, ...)
        where = args[1] if name == "convolution_backward" else _tensors(out)[0]
        return flops, (where.shape[1], *where.shape[2:])
    # cuDNN's and oneDNN's fused forms: (input, weight, ...), oneDNN's binary form (input, other, weight, ...)
    x, w = args[0], args[2] if op_name.endswith("_convolution_pointwise.binary") else args[1]
    y = _tensors(out)[0]
    return conv_flop_count(x.shape, w.shape, y.shape), (y.shape[1], *y.shape[2:])


def memory_bytes(op_name: str, args: tuple, kwargs: tuple, out, is_view: bool) -> int:
    """Bytes an unfused operation must move: its tensor operands and results, once each (views,
    aliases and allocations: none)."""
    if is_view or op_name.split(".")[1] in NO_DATA:
        return 0
    return sum(t.distinct_bytes() for t in _tensors((args, kwargs, out)))


def time_call(fn, device, min_seconds: float = 0.05, max_repeats: int = 50) -> float:
    """Seconds per call of ``fn`` alone: one warm-up call, then calls queued until ``min_seconds``
    have passed on the host (at least 3, at most ``max_repeats``), the queue drained at the end."""
    fn()
    sync(device)
    repeats, start = 0, time.perf_counter()
    while repeats < max_repeats and (repeats < 3 or time.perf_counter() - start < min_seconds):
        fn()
        repeats += 1
    sync(device)
    return (time.perf_counter() - start) / repeats


def replay(func, args: tuple, kwargs: tuple):
    """A function that calls ``func`` on fresh random tensors of the recorded specs."""
    materialise = (lambda v: v.make() if isinstance(v, TensorSpec) else v)
    real_args = tree_map(materialise, _thaw(args))
    real_kwargs = dict(tree_map(materialise, _thaw(kwargs)))
    return lambda: func(*real_args, **real_kwargs)


def _thaw(x):
    """Tuples back to lists where ATen expects lists (int[] arguments accept both)."""
    if isinstance(x, tuple):
        return [_thaw(v) for v in x]
    return x


def copy_bandwidth(device, megabytes: int = 512) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = time_call(lambda: dst.copy_(src), device, min_seconds=0.2)
    return 2 * src.numel() / seconds


def analyse(recorder: OpRecorder, device, time_tensor_ops: bool = True) -> dict:
    """The floors and the FLOP mix of one recorded repetition."""
    bandwidth = copy_bandwidth(device)
    tensor_s = memory_bytes_total = flops_total = 0.0
    by_place: dict = defaultdict(lambda: {"flops": 0.0, "floor_s": 0.0, "calls": 0})
    memory_ops: dict = defaultdict(float)
    working = 0  # calls that compute or move data: about the kernels a GPU launches
    not_replayed: Counter = Counter()
    for key, count in recorder.calls.items():
        op_name, args, kwargs, out = key
        func = recorder.ops[key]
        if kind(op_name) == "memory":
            moved = memory_bytes(op_name, args, kwargs, out, func.is_view) * count
            memory_bytes_total += moved
            memory_ops[op_name] += moved
            working += count if moved else 0
            continue
        working += count
        flops, place = tensor_op_flops(op_name, _thaw(args), out)
        seconds = 0.0
        if time_tensor_ops:
            try:
                seconds = time_call(replay(func, args, kwargs), device) * count
            except RuntimeError as exc:  # a call its library refuses alone: reported, not guessed
                not_replayed[op_name] += count
                print(f"not replayed: {op_name}: {str(exc).splitlines()[0][:200]}", flush=True)
        direction = "input_grad" if "backward" in op_name else "forward"
        row = by_place[(direction, *place)]
        row["flops"] += flops * count
        row["floor_s"] += seconds
        row["calls"] += count
        tensor_s += seconds
        flops_total += flops * count
    rows = sorted(({"direction": k[0], "place": "x".join(map(str, k[1:])), "calls": v["calls"],
                    "tflop": round(v["flops"] / 1e12, 4), "flop_share": round(v["flops"] / max(flops_total, 1), 3),
                    "floor_ms": round(v["floor_s"] * 1e3, 3) if time_tensor_ops else None,
                    "tflops_alone": round(v["flops"] / v["floor_s"] / 1e12, 2) if v["floor_s"] else None}
                   for k, v in by_place.items()), key=lambda r: -r["tflop"])
    top_memory = sorted(memory_ops.items(), key=lambda kv: -kv[1])[:8]
    return {"operations": working, "tensor_tflop": round(flops_total / 1e12, 4),
            "tensor_floor_s": round(tensor_s, 5) if time_tensor_ops else None,
            "memory_gb": round(memory_bytes_total / 1e9, 3), "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
            "memory_floor_s": round(memory_bytes_total / bandwidth, 5),
            "tensor_ops": rows, "memory_ops_gb": {name: round(b / 1e9, 3) for name, b in top_memory},
            "not_replayed_calls": dict(not_replayed)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("region", choices=["train", "evaluate", "lstsq"])
    parser.add_argument("--sender", help="default: paper/resnet_1111-s0 on CUDA, zoo/resnet_1111-s0 on a CPU")
    parser.add_argument("--receiver", help="default: paper/resnet_2222-s0 on CUDA, zoo/resnet_2222-s0 on a CPU")
    parser.add_argument("--batch-size", type=int, help="train: images per step (256 on CUDA, 128 on a CPU)")
    parser.add_argument("--images", type=int, default=2000, help="evaluate, lstsq: images per repetition")
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions of the region (after 2 warm-up)")
    parser.add_argument("--no-replay", action="store_true", help="count FLOPs and bytes only (no floor times)")
    parser.add_argument("--bf16", dest="amp", action="store_const", const=True, default=None,
                        help="bf16 autocast on a CPU too (the GPU's dtypes, so its bytes; default: CUDA only)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    paper = device.type == "cuda"
    args.sender = args.sender or f"{'paper' if paper else 'zoo'}/resnet_1111-s0"
    args.receiver = args.receiver or f"{'paper' if paper else 'zoo'}/resnet_2222-s0"
    args.batch_size = args.batch_size or (256 if paper else 128)
    step = region(args.region, device, args)
    measured = seconds_per_call(step, device, args.steps, warmup=2)
    with OpRecorder() as recorder:
        step()
    sync(device)
    figures = analyse(recorder, device, time_tensor_ops=not args.no_replay)
    replayed = not args.no_replay
    floor = (figures["tensor_floor_s"] or 0.0) + figures["memory_floor_s"]
    print(f"{'direction':>10} {'place':>12} {'calls':>5} {'TFLOP':>8} {'share':>6}"
          + (f" {'floor ms':>9} {'TFLOP/s':>8}" if replayed else ""))
    for r in figures["tensor_ops"]:
        print(f"{r['direction']:>10} {r['place']:>12} {r['calls']:5d} {r['tflop']:8.4f} {r['flop_share']:6.1%}"
              + (f" {r['floor_ms']:9.3f} {r['tflops_alone'] or 0:8.2f}" if replayed else ""))
    print(f"measured {measured * 1e3:.1f} ms per repetition, {figures['operations']} operations; "
          + (f"tensor floor {figures['tensor_floor_s'] * 1e3:.1f} ms, " if replayed else "")
          + f"memory floor {figures['memory_floor_s'] * 1e3:.1f} ms ({figures['memory_gb']} GB at "
          f"{figures['copy_bandwidth_gb_s']} GB/s)")
    return emit("roofline", device, region=args.region, sender=args.sender, receiver=args.receiver,
                batch_size=args.batch_size if args.region == "train" else None,
                images=args.images if args.region != "train" else None,
                bf16=bool(args.amp) or device.type == "cuda", measured_s=round(measured, 5),
                floor_s=round(floor, 5) if replayed else None,
                floor_share_of_measured=round(floor / measured, 3) if replayed else None, **figures)


if __name__ == "__main__":
    main()
