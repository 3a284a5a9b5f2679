"""Shared by the benchmark scripts: honest timers and one JSON line per result."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch

# bf16 dense tensor-core peak of an H100 SXM (NVIDIA's datasheet); a measured 8192^3 bf16 matmul
# reached 769-798 TFLOP/s on the machines this project benchmarks on.
H100_BF16_PEAK_TFLOPS = 989.0


def device_description(device: torch.device) -> str:
    """The device as manifests name it (core.device.device_name), plus what a timing depends on."""
    from core.device import device_name

    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"{device_name(device)}{threads} (torch {torch.__version__})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timer(device: torch.device, into: dict, key: str):
    """Wall time of the block, the GPU's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    into[key] = round(time.perf_counter() - start, 4)


def seconds_per_call(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Mean wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones, the GPU's
    queue drained before and after."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def emit(name: str, device: torch.device, **figures) -> dict:
    """Print one JSON line (and append it to $BENCH_OUT when set)."""
    command = " ".join([f"python -m bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    record = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "device": device_description(device), "command": command, **figures}
    line = json.dumps(record)
    print(line, flush=True)
    if os.environ.get("BENCH_OUT"):
        with open(os.environ["BENCH_OUT"], "a") as f:
            f.write(line + "\n")
    return record


def random_resnet(blocks: str, width: int, seed: int, device, name: str | None = None):
    """A random-weight ResNet (``blocks`` such as ``"2222"``) for Fashion-MNIST, frozen like a zoo
    model: for timings, which do not depend on the weights."""
    from core.data.datasets import FASHION_MNIST
    from core.models.architectures import build_architecture
    from core.models.network import Network, freeze

    config = {"arch": "resnet", "blocks": [int(b) for b in blocks], "width": width, "in_channels": 1,
              "num_classes": 10}
    torch.manual_seed(seed)
    return Network(name or f"random ResNet-{blocks} (width {width}, seed {seed})",
                   freeze(build_architecture(config).to(device)), FASHION_MNIST.image_shape, 10, FASHION_MNIST.mean,
                   FASHION_MNIST.std, config)


def grid_arguments(description: str, argv=None):
    """The arguments the grid benchmarks share; returns ``(args, device, sender, receiver)``.

    Default pair: R1111 -> R2222 at width 64 (``paper/``) on CUDA, the zoo's width-16 pair on a CPU.
    """
    import argparse

    from core.device import resolve_device

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sender")
    parser.add_argument("--receiver")
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--eval-limit", type=int)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    prefix = "paper" if device.type == "cuda" else "zoo"
    return args, device, args.sender or f"{prefix}/resnet_1111-s0", args.receiver or f"{prefix}/resnet_2222-s0"
