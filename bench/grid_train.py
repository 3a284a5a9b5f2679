"""Task-loss grid: the fused engine against the seed paper's one-stitch-at-a-time loop.

Default: R1111 -> R2222 at width 64 (``paper/`` models, trained by
``python -m core zoo train --preset paper``), every sender layer x every receiver layer (45
pairs), one epoch of Fashion-MNIST at batch 256, SGD lr 0.01, momentum 0.9, weight decay 0.01.

* ``baseline``: each stitch trained alone, fp32, its own passes over the data (the seed
  paper's loop), then scored.
* variants of the fused engine (core.engine.fused.FusedStitches): ``simple`` (fp32, no layout,
  folding or fusion tricks), ``fused`` (the engine's defaults: bf16 autocast, channels_last,
  BatchNorm folded, conv + bias (+ residual) + ReLU as one cuDNN call, cuDNN's heuristics pick
  the algorithms), ``unfused`` (the defaults without the conv + ReLU fusion), ``autotune`` (the
  defaults, cuDNN timing every algorithm per shape instead), ``conv_stitches`` (the defaults,
  k x k stride-k stitches as cuDNN convolutions rather than one matrix product each),
  ``compiled`` (the defaults plus torch.compile, compile time included).

With ``--warm`` each variant runs a second time in the same process with new stitches: the
first run pays cuDNN's per-shape set-up and autotuning, the second is what a long-lived process
(the dashboard's server) sees from its second grid on.

Prints one JSON line with times, speedups, achieved TFLOP/s and accuracy differences.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.data.datasets import load_dataset
from core.device import resolve_device
from core.engine.fused import Cell, FusedStitches
from core.engine.grid import _cell_seed
from core.engine.layers import list_layers
from core.engine.stitches import make_stitch
from core.models.network import cached_model

from ._util import H100_BF16_PEAK_TFLOPS, emit, timer

VARIANTS = {
    "simple": {"amp": False, "channels_last": False, "fold_bn": False, "fuse_relu": False},
    "fused": {},
    "unfused": {"fuse_relu": False},
    "autotune": {"autotune": True},
    "conv_stitches": {"patch_product": False},
    "compiled": {"compile": True},
}


def make_cells(sender, receiver) -> list[Cell]:
    return [Cell(sender, receiver, i, j, make_stitch(i.shape, j.shape, seed=_cell_seed(0, i.name, j.name)))
            for i in list_layers(sender) for j in list_layers(receiver)]


def accuracy(confusion: torch.Tensor) -> float:
    return confusion.diagonal().sum().item() / confusion.sum().item()


def run(fused: FusedStitches, train, test, args, device, into: dict) -> list[float]:
    with timer(device, into, "train_s"):
        fused.train(train, args.epochs, args.batch_size, 0.01, 0.9, 0.01, seed=0)
    with timer(device, into, "eval_s"):
        confusions = fused.evaluate(test, 1000 if device.type == "cuda" else 64)
    into["total_s"] = round(into["train_s"] + into["eval_s"], 4)
    return [accuracy(confusions[id(c)]) for c in fused.cells]


def flops_per_step(sender, receiver, train, args, device, options) -> float:
    # Counted on the eager ops: the counter has no formula for cuDNN's fused conv + ReLU (the
    # same convolutions; bias, residual and ReLU add no FLOPs it counts).
    fused = FusedStitches(make_cells(sender, receiver), device, **{**options, "fuse_relu": False})
    images, labels = next(train.batches(args.batch_size, device))
    params = [p for c in fused.cells for p in c.stitch.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    active = fused._in_group_order(fused.cells)
    with FlopCounterMode(display=False) as counter:
        fused._train_step(images, labels, active, optimizer)
    return float(counter.get_total_flops())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sender", default="paper/resnet_1111-s0")
    parser.add_argument("--receiver", default="paper/resnet_2222-s0")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--baseline", type=int, default=-1, help="stitches to time one at a time (-1: all, 0: none)")
    parser.add_argument("--variants", default="simple,fused,compiled")
    parser.add_argument("--warm", action="store_true", help="run each variant twice, report both")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    sender, receiver = cached_model(args.sender, str(device)), cached_model(args.receiver, str(device))
    train = load_dataset("fashion-mnist", "train", args.train_limit).to(device)
    test = load_dataset("fashion-mnist", "test", args.eval_limit).to(device)
    steps = round(args.epochs * -(-len(train) // args.batch_size))
    out: dict = {"sender": args.sender, "receiver": args.receiver, "epochs": args.epochs,
                 "batch_size": args.batch_size, "train_images": len(train), "steps": steps, "variants": {}}

    results = {}
    for name in [v for v in args.variants.split(",") if v]:
        cells = make_cells(sender, receiver)
        out["pairs"] = len(cells)
        figures: dict = {}
        results[name] = run(FusedStitches(cells, device, **VARIANTS[name]), train, test, args, device, figures)
        if args.warm:
            warm: dict = {}
            run(FusedStitches(make_cells(sender, receiver), device, **VARIANTS[name]), train, test, args, device, warm)
            figures.update({f"warm_{k}": v for k, v in warm.items()})
        if name != "compiled":
            figures["flops_per_step"] = flops_per_step(sender, receiver, train, args, device, VARIANTS[name])
            figures["train_tflops"] = round(figures["flops_per_step"] * steps / figures["train_s"] / 1e12, 1)
            if args.warm:
                figures["warm_train_tflops"] = round(figures["flops_per_step"] * steps / figures["warm_train_s"]
                                                     / 1e12, 1)
            if device.type == "cuda":
                figures["share_of_bf16_peak"] = round(figures["train_tflops"] / H100_BF16_PEAK_TFLOPS, 3)
        out["variants"][name] = figures
        print(f"{name}: {figures}", flush=True)

    if args.baseline:
        cells = make_cells(sender, receiver)
        chosen = cells if args.baseline < 0 else cells[:: max(1, len(cells) // args.baseline)][: args.baseline]
        times, accs = [], []
        for cell in chosen:
            figures: dict = {}
            accs += run(FusedStitches([cell], device, **VARIANTS["simple"]), train, test, args, device, figures)
            times.append(figures)
        per_stitch = sum(t["total_s"] for t in times) / len(times)
        out["baseline"] = {"stitches_timed": len(chosen), "per_stitch_s": round(per_stitch, 3),
                           "per_stitch_train_s": round(sum(t["train_s"] for t in times) / len(times), 3),
                           "grid_s": round(per_stitch * len(cells), 2),
                           "grid_s_is": "measured" if len(chosen) == len(cells) else "per-stitch mean x pairs"}
        for name, figures in out["variants"].items():
            figures["speedup_vs_baseline"] = round(out["baseline"]["grid_s"] / figures["total_s"], 1)
            if len(chosen) == len(cells):
                diffs = [abs(a - b) for a, b in zip(results[name], accs)]
                figures["max_abs_accuracy_diff"] = round(max(diffs), 4)
                figures["mean_abs_accuracy_diff"] = round(sum(diffs) / len(diffs), 4)
        out["baseline"]["accuracy_range"] = [round(min(accs), 4), round(max(accs), 4)]
    for name, accs in results.items():
        out["variants"][name]["accuracy_range"] = [round(min(accs), 4), round(max(accs), 4)]
    return emit("grid_train", device, **out)


if __name__ == "__main__":
    main()
