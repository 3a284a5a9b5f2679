"""Single operations of a grid's shapes on CUDA: what the convolutions can reach, what cuDNN's
fused conv + bias (+ residual) + ReLU saves, and what torch.compile would do for a receiver suffix.

Prints one line per measurement and one JSON line with all of them (bf16, channels_last, cuDNN
heuristics; the suffix part uses the width-64 ``paper/resnet_2222-s0`` if trained, else random
weights of the same architecture).

* ``conv``: one 3 x 3 convolution, forward and input gradient, TFLOP/s;
* ``fused``: conv + bias + ReLU and conv + bias + residual + ReLU, eager against
  ``torch.cudnn_convolution_relu`` / ``torch.cudnn_convolution_add_relu`` (strides 1 and 2);
* ``strided_1x1``: the 1 x 1 stride-2 shortcut convolutions against subsampling and a stride-1
  1 x 1 convolution, forward and input gradient (not yet run on a GPU);
* ``compile``: a training step and a scoring pass of the receiver suffix from two layers,
  eager against ``torch.compile`` (compile time reported separately).

    python -m bench.kernels                 # all four
    python -m bench.kernels --only fused
"""

# ruff: noqa: B023 -- every closure below is timed and dropped within its own loop iteration
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ._util import emit

CL = {"memory_format": torch.channels_last}


def timeit(fn, repeats: int = 20) -> float:
    """Seconds per call after three warm-up calls, the queue drained."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _maps(n, c, hw, device):
    return torch.randn(n, c, hw, hw, device=device, dtype=torch.bfloat16).contiguous(**CL)


def conv_rates(device) -> list[dict]:
    rows = []
    for c, hw, n in [(64, 32, 1280), (128, 16, 1280), (256, 8, 1280), (512, 4, 1280), (64, 32, 5000)]:
        x = _maps(n, c, hw, device).requires_grad_()
        w = torch.randn(c, c, 3, 3, device=device, dtype=torch.bfloat16).contiguous(**CL)
        flop = 2 * n * hw * hw * c * c * 9
        out = F.conv2d(x, w, padding=1)
        grad = torch.randn_like(out)
        fwd = timeit(lambda: F.conv2d(x, w, padding=1))
        dgrad = timeit(lambda: torch.autograd.grad(out, x, grad, retain_graph=True))
        rows.append({"channels": c, "pixels": hw, "images": n, "forward_ms": round(fwd * 1e3, 3),
                     "forward_tflops": round(flop / fwd / 1e12), "input_grad_ms": round(dgrad * 1e3, 3),
                     "input_grad_tflops": round(flop / dgrad / 1e12)})
    return rows


def fused_vs_eager(device) -> list[dict]:
    rows = []
    for c_in, c_out, hw, stride, n in [(64, 64, 32, 1, 1280), (64, 64, 32, 1, 5000), (128, 128, 16, 1, 5000),
                                       (256, 256, 8, 1, 5000), (512, 512, 4, 1, 5000), (64, 128, 32, 2, 1280),
                                       (128, 256, 16, 2, 5000), (256, 512, 8, 2, 5000)]:
        x = _maps(n, c_in, hw, device)
        w = (torch.randn(c_out, c_in, 3, 3, device=device, dtype=torch.bfloat16) / (3 * c_in**0.5)).contiguous(**CL)
        b = torch.randn(c_out, device=device, dtype=torch.bfloat16)
        z = _maps(n, c_out, hw // stride, device)
        args = ([stride] * 2, [1, 1], [1, 1], 1)
        row = {"in": c_in, "out": c_out, "pixels": hw, "stride": stride, "images": n,
               "conv_ms": timeit(lambda: F.conv2d(x, w, None, stride, 1)),
               "eager_ms": timeit(lambda: F.relu(F.conv2d(x, w, b, stride, 1))),
               "fused_ms": timeit(lambda: torch.cudnn_convolution_relu(x, w, b, *args)),
               "eager_residual_ms": timeit(lambda: F.relu(F.conv2d(x, w, b, stride, 1) + z)),
               "fused_residual_ms": timeit(lambda: torch.cudnn_convolution_add_relu(x, w, z, 1.0, b, *args))}
        rows.append({k: round(v * 1e3, 3) if k.endswith("_ms") else v for k, v in row.items()})
    return rows


def strided_1x1(device) -> list[dict]:
    """R2222's 1 x 1 stride-2 shortcut convolutions, which cuDNN ran at 12 TFLOP/s (7 % of a
    grid's scoring GPU time in the profile of 2026-11-23), against subsampling first and a 1 x 1
    convolution at stride 1: the same arithmetic, and the same numbers up to rounding."""
    rows = []
    for c_in, hw, n in [(64, 32, 1280), (64, 32, 5000), (128, 16, 5000), (256, 8, 5000)]:
        c_out = 2 * c_in
        x = _maps(n, c_in, hw, device).requires_grad_()
        w = (torch.randn(c_out, c_in, 1, 1, device=device, dtype=torch.bfloat16) / c_in**0.5).contiguous(**CL)
        b = torch.randn(c_out, device=device, dtype=torch.bfloat16)
        flop = 2 * n * (hw // 2) ** 2 * c_in * c_out
        variants = {"strided": lambda: F.conv2d(x, w, b, 2), "subsampled": lambda: F.conv2d(x[:, :, ::2, ::2], w, b)}
        row = {"in": c_in, "out": c_out, "pixels": hw, "images": n}
        with torch.no_grad():
            row["max_abs_diff"] = float((variants["strided"]() - variants["subsampled"]()).abs().max())
        for name, fn in variants.items():
            out = fn()
            grad = torch.randn_like(out)
            fwd = timeit(fn)
            dgrad = timeit(lambda: torch.autograd.grad(out, x, grad, retain_graph=True))
            row.update({f"{name}_forward_ms": round(fwd * 1e3, 3), f"{name}_forward_tflops": round(flop / fwd / 1e12),
                        f"{name}_input_grad_ms": round(dgrad * 1e3, 3)})
        rows.append(row)
    return rows


def compiled_suffix(device) -> list[dict]:
    from core.engine.folding import folded
    from core.engine.layers import list_layers, receiver_suffix

    from .profile import _network

    receiver = _network("paper/resnet_2222-s0", device)
    layers = list_layers(receiver)
    rows = []
    for mode in ("eager", "compile"):
        for layer in (layers[0], layers[4]):
            start = time.perf_counter()
            suffix = receiver_suffix(folded(receiver, [layer], channels_last=True), layer)
            fn = torch.compile(suffix, dynamic=False) if mode == "compile" else suffix
            z = torch.randn(1280, *layer.shape, device=device).contiguous(**CL).requires_grad_()
            z_score = torch.randn(5000, *layer.shape, device=device).contiguous(**CL)

            def train_step():
                with torch.autocast("cuda", torch.bfloat16):
                    out = fn(z)
                out.float().sum().backward()

            def score():
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                    fn(z_score)

            train_step(), score()
            torch.cuda.synchronize()
            row = {"mode": mode, "from": layer.name, "first_call_s": round(time.perf_counter() - start, 1)}
            for name, step in (("train_step_1280", train_step), ("score_5000", score)):
                seconds = timeit(step, 10)
                row[f"{name}_ms"] = round(seconds * 1e3, 2)
                if mode == "eager":  # the counter cannot see inside compiled code; the FLOPs are the same
                    with FlopCounterMode(display=False) as counter:
                        step()
                    row[f"{name}_tflops"] = round(counter.get_total_flops() / seconds / 1e12)
            rows.append(row)
    return rows


PARTS = {"conv": conv_rates, "fused": fused_vs_eager, "strided_1x1": strided_1x1, "compile": compiled_suffix}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated parts: " + ", ".join(PARTS))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.kernels measures cuDNN kernels: it needs a CUDA device")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = False  # the engine's default: cuDNN's heuristics
    out = {}
    for name in (args.only.split(",") if args.only else PARTS):
        out[name] = PARTS[name](device)
        for row in out[name]:
            print(name, row, flush=True)
    return emit("kernels", device, **out)


if __name__ == "__main__":
    main()
