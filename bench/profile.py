"""Where the GPU time of the engine goes: ``torch.profiler`` over one region, kernels by category.

Regions (R1111 -> R2222 at width 64, the task-loss benchmark's pair; ``paper/`` models if
trained, else random weights of the same architectures, which time the same):

* ``train``: fused training steps of all 45 cells, batch 256 (after warm-up steps);
* ``evaluate``: scoring all 45 cells on test images, batches of 1000;
* ``lstsq``: least-squares normal equations of all 45 cells, batches of 1024;
* ``cka``: minibatch CKA of two ResNet-18s, 9 x 9 layers, batches of 500.

Prints the top kernels and one JSON line: wall time per step, the GPU's busy time (sum of
kernel times) and its share by category (convolution, GEMM, elementwise, reduction, layout
copies, other). Busy time far below wall time means the host, not the GPU, sets the pace.

    python -m bench.profile train --steps 5
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from core.data.datasets import load_dataset
from core.device import resolve_device

from ._util import emit, random_resnet, seconds_per_call, sync

# Kernel names -> category, first match wins (cuDNN, cuBLAS/CUTLASS and ATen kernel names).
CATEGORIES = [
    ("layout", r"nchwToNhwc|nhwcToNchw|transpose|permute"),
    ("convolution", r"conv|implicit|fprop|dgrad|wgrad|xmma_fprop|cudnn|winograd"),
    ("gemm", r"gemm|cutlass|cublas|sm\d+_xmma|ampere_|hopper_|dot_kernel"),
    ("reduction", r"reduce|Reduce|sum|norm|argmax|kthvalue|sort"),
    ("copy", r"copy|Copy|cat|Cat"),
    ("elementwise", r"elementwise|vectorized|unrolled|Elementwise|index"),
]


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


def _network(name: str, device):
    """The named model; a ``paper/`` model not trained here is replaced by random weights of its
    architecture (width 64, its seed), which time the same."""
    from core.models.network import cached_model
    from core.models.zoo import ZooError

    try:
        return cached_model(name, str(device))
    except ZooError:
        paper = re.fullmatch(r"paper/resnet_(\d{4})-s(\d+)", name)
        if paper is None:
            raise
        return random_resnet(paper[1], 64, int(paper[2]), device, name=f"random {name}")


def _fused(device, sender: str | None = None, receiver: str | None = None, **options):
    """The engine over every cell of ``sender`` x ``receiver`` (default: the paper/ pair)."""
    from core.engine.fused import FusedStitches

    from .grid_train import make_cells

    sender_net = _network(sender or "paper/resnet_1111-s0", device)
    receiver_net = _network(receiver or "paper/resnet_2222-s0", device)
    return FusedStitches(make_cells(sender_net, receiver_net), device, **options)


def region(name: str, device, args):
    """A function that runs one repetition of the region."""
    from core.engine.fused import _cudnn_autotune

    if name == "cka":
        from core.similarity.networks import model_cka

        net_a = _network("paper/resnet_2222-s0", device)
        net_b = _network("paper/resnet_2222-s1", device)
        return (lambda: model_cka(net_a, net_b, limit=args.images, batch_size=500, device=device))
    options = {} if getattr(args, "amp", None) is None else {"amp": args.amp}
    fused = _fused(device, getattr(args, "sender", None), getattr(args, "receiver", None), **options)
    if name == "train":
        train = load_dataset("fashion-mnist", "train", args.batch_size * 4).to(device)
        batches = list(train.batches(args.batch_size, device))
        active = fused._in_group_order(fused.cells)
        optimizer = torch.optim.SGD([p for c in active for p in c.stitch.parameters()], lr=0.01, momentum=0.9,
                                    weight_decay=0.01)
        for c in active:
            c.stitch.train()
        state = {"k": 0}

        def step():
            images, labels = batches[state["k"] % len(batches)]
            state["k"] += 1
            with _cudnn_autotune(device, fused.autotune):
                fused._train_step(images, labels, active, optimizer)
        return step
    if name == "evaluate":
        test = load_dataset("fashion-mnist", "test", args.images).to(device)
        return (lambda: fused.evaluate(test, 1000))
    if name == "lstsq":
        train = load_dataset("fashion-mnist", "train", args.images).to(device)
        return (lambda: fused.fit_lstsq(train, 1024, seed=0))
    raise SystemExit(f"unknown region {name!r}: train, evaluate, lstsq or cka")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("region", choices=["train", "evaluate", "lstsq", "cka"])
    parser.add_argument("--steps", type=int, default=3, help="profiled repetitions of the region")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=256, help="train: images per step")
    parser.add_argument("--images", type=int, default=2000, help="evaluate, lstsq, cka: images per repetition")
    parser.add_argument("--ops", action="store_true", help="also the ATen operators by device time, with shapes")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    step = region(args.region, device, args)
    wall = seconds_per_call(step, device, args.steps, args.warmup)  # unprofiled: the profiler adds host overhead

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=args.ops) as prof:
        for _ in range(args.steps):
            step()
        sync(device)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6 / args.steps
    by_category: dict[str, float] = defaultdict(float)
    for e in kernels:
        by_category[category(e.key)] += e.self_device_time_total / 1e6 / args.steps
    kernels.sort(key=lambda e: -e.self_device_time_total)
    print(f"{'ms/step':>8} {'share':>6} {'calls':>6}  kernel")
    for e in kernels[: args.top]:
        t = e.self_device_time_total / 1e3 / args.steps
        share = t / 1e3 / max(busy, 1e-9)
        print(f"{t:8.2f} {share:6.1%} {e.count // args.steps:6d}  [{category(e.key)}] {e.key[:140]}")
    if device.type != "cuda":
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    elif args.ops:  # which ATen operators, on which shapes, launched the kernels
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=40,
            max_shapes_column_width=100))
    launches = sum(e.count for e in kernels) // args.steps
    return emit("profile", device, region=args.region, wall_s_per_step=round(wall, 4),
                gpu_busy_s_per_step=round(busy, 4), kernels_per_step=launches,
                share_by_category={k: round(v / busy, 3) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])}
                if busy else {})


if __name__ == "__main__":
    main()
