"""The engine's CPU choices, each against its alternative, in one process and interleaved.

On this project's 2-core machine the same grid varies by +-20 % from one process to the next,
so separate runs cannot show a 10-20 % effect; here every variant runs in turn, ``--repeats``
times, and the median is reported.

* ``conv``: one 3 x 3 convolution + bias (+ residual) + ReLU at the zoo's shapes (batch 320 =
  five stitches of 64 images, channels_last), the eager ops against the engine's fused call
  (oneDNN's ``torch.ops.mkldnn._convolution_pointwise``, :mod:`core.engine.conv_fusion`);
* ``prefix``: the zoo ResNet-18 (``zoo/resnet_2222-s0``) folded, up to all 9 of its layers, on
  256 images: NCHW or NHWC weights x eager or fused;
* ``engine``: :class:`core.engine.fused.FusedStitches` of the zoo's default 45 cells (R1111 -> R2222):
  least squares on 512 training images, scoring 256 test images (batches of 64), two training
  steps of 128; the engine's defaults, without the fusion (``fuse_relu=False``), and NCHW
  throughout (``channels_last=False``).

    python -m bench.cpu_engine --device cpu
"""

# ruff: noqa: B023 -- every closure below is timed and dropped within its own loop iteration
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from core.data.datasets import load_dataset
from core.engine.conv_fusion import _conv_bias_relu, fuse_conv_relu
from core.engine.folding import folded
from core.engine.fused import FusedStitches
from core.engine.layers import list_layers, sender_prefix
from core.models.network import cached_model

from ._util import emit
from .grid_train import make_cells

CL = {"memory_format": torch.channels_last}


def interleaved(variants: dict, repeats: int) -> dict:
    """Median seconds of each callable, the variants taking turns (one warm-up call each)."""
    for fn in variants.values():
        fn()
    times: dict = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(ts), 4) for name, ts in times.items()}


def conv(repeats: int) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for channels, pixels in [(16, 32), (32, 16), (64, 8), (128, 4)]:
        x = torch.randn(320, channels, pixels, pixels, generator=generator).contiguous(**CL)
        residual = torch.randn(320, channels, pixels, pixels, generator=generator).contiguous(**CL)
        weight = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.1).contiguous(**CL)
        bias = torch.randn(channels, generator=generator)
        one = [1, 1]  # stride, padding, dilation
        figures = interleaved({  # the fused calls are the engine's own (oneDNN on a CPU)
            "eager": lambda: F.relu(F.conv2d(x, weight, bias, 1, 1)),
            "fused": lambda: _conv_bias_relu(x, weight, bias, None, one, one, one, 1),
            "eager_residual": lambda: F.relu(F.conv2d(x, weight, bias, 1, 1) + residual),
            "fused_residual": lambda: _conv_bias_relu(x, weight, bias, residual, one, one, one, 1),
        }, repeats)
        rows.append({"channels": channels, "pixels": pixels,
                     **{f"{k}_ms": round(v * 1e3, 2) for k, v in figures.items()}})
        print(rows[-1], flush=True)
    return rows


def prefix(repeats: int) -> dict:
    net = cached_model("zoo/resnet_2222-s0", "cpu")
    layers = list_layers(net)
    images = load_dataset("fashion-mnist", "test", 256).images.float() / 255
    x = net.prepare(images).contiguous(**CL)
    variants = {}
    for weights, channels_last in (("nchw", False), ("nhwc", True)):
        for fuse in (False, True):
            run = sender_prefix(folded(net, layers, channels_last), layers)
            if fuse:
                fuse_conv_relu(run.extractor)
            variants[f"{weights}_weights_{'fused' if fuse else 'eager'}"] = run
    with torch.no_grad():
        figures = interleaved({name: (lambda run=run: run(x)) for name, run in variants.items()}, repeats)
    figures = {f"{k}_ms": round(v * 1e3, 1) for k, v in figures.items()}
    print(figures, flush=True)
    return figures


def engine(repeats: int) -> dict:
    sender, receiver = cached_model("zoo/resnet_1111-s0", "cpu"), cached_model("zoo/resnet_2222-s0", "cpu")
    train = load_dataset("fashion-mnist", "train", 512)
    test = load_dataset("fashion-mnist", "test", 256)
    cpu = torch.device("cpu")
    engines = {"defaults": FusedStitches(make_cells(sender, receiver), cpu),
               "unfused": FusedStitches(make_cells(sender, receiver), cpu, fuse_relu=False),
               "nchw": FusedStitches(make_cells(sender, receiver), cpu, channels_last=False)}
    out = {}
    for stage, call in (("lstsq_s", lambda f: f.fit_lstsq(train, 256, seed=0)),
                        ("score_s", lambda f: f.evaluate(test, 64)),
                        ("train_2_steps_s", lambda f: f.train(train, 0.5, 128, 0.01, 0.9, 0.01, seed=0))):
        out[stage] = interleaved({name: (lambda f=f: call(f)) for name, f in engines.items()}, repeats)
        print(stage, out[stage], flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="conv,prefix,engine")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="CPU only (the GPU's are bench.kernels)")
    args = parser.parse_args(argv)
    parts = {"conv": conv, "prefix": prefix, "engine": engine}
    figures = {name: parts[name](args.repeats) for name in args.only.split(",") if name}
    return emit("cpu_engine", torch.device("cpu"), repeats=args.repeats, **figures)


if __name__ == "__main__":
    main()
