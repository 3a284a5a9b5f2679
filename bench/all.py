"""Every benchmark of the performance targets, one after another, in one command (``make bench``).

Each runs in its own process (no model or cuDNN cache carried from one to the next) and
appends its JSON line to ``bench/results/<device>-<date>.jsonl`` (or ``$BENCH_OUT``).

On CUDA the targets are stated for the width-64 ``paper/`` models (R1111, R2222 and a second
R2222 seed); those not yet in ``$STITCHLAB_HOME/zoo-paper`` are trained first with
``python -m core zoo train --preset paper`` (3 epochs each, a few minutes on an H100; the
training is not timed). On a CPU the grid benchmarks use the bundled zoo, the CKA benchmark two
random-weight ResNet-18s, and the task-loss comparison is skipped (one epoch of 45 width-64
stitches one at a time takes hours on 2 cores).

    python -m bench.all                 # everything this device can run
    python -m bench.all --only cka,grid_lstsq
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

PAPER_MODELS = ("resnet_1111-s0", "resnet_2222-s0", "resnet_2222-s1")


def plan(cuda: bool) -> list[tuple[str, list[str]]]:
    """(benchmark module, arguments) in the order they run."""
    if cuda:
        return [("grid_train", ["--variants", "fused,unfused,conv_stitches", "--warm"]), ("grid_lstsq", []),
                ("grid_controls", ["--sender", "zoo/resnet_1111-s0", "--receiver", "zoo/resnet_2222-s0",
                                   "--train-limit", "15000"]),
                ("cka", []), ("cka", ["--random-width", "64"]), ("kernels", []), ("roofline", ["train"]),
                ("roofline", ["evaluate"])]
    # The similarity indices, the store's integrity check and the hostile-input probes run on the CPU
    # wherever they run: only here, not in a GPU machine's plan, whose time goes to what needs the GPU.
    # At their own defaults, the sizes BENCHMARKS.md, core/runs/store.py and README.md quote, on
    # 2 busy cores: similarity_indices 2,000 images (10-18 min), store_check a 1 GB store of 300
    # grids (under a minute; kept in /tmp for the next run), adversarial_probes 961 probes (4 min).
    return [("grid_lstsq", ["--device", "cpu"]), ("recipes", ["--device", "cpu"]),
            ("grid_controls", ["--device", "cpu"]),
            ("cka", ["--random-width", "16", "--images", "2000", "--device", "cpu"]), ("cpu_engine", []),
            ("roofline", ["train", "--device", "cpu"]), ("app_speed", []), ("cancel_latency", []),
            ("similarity_indices", []), ("store_check", []), ("adversarial_probes", [])]


def _missing_paper_models() -> list[str]:
    from core import paths

    folder = paths.home() / "zoo-paper"
    manifest = (folder / "manifest.json").read_text() if (folder / "manifest.json").exists() else ""
    return [m for m in PAPER_MODELS if f'"{m}"' not in manifest]


def _train_paper_models(names: list[str]) -> None:
    if names:
        print(f"training {', '.join('paper/' + n for n in names)} on Fashion-MNIST (3 epochs each; not timed)",
              flush=True)
        subprocess.run([sys.executable, "-m", "core", "zoo", "train", "--preset", "paper", "--dataset",
                        "fashion-mnist", "--only", ",".join(names), "--epochs", "3", "--device", "cuda"], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names (default: all this device can run)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    steps = plan(cuda)
    if args.only:
        wanted = set(args.only.split(","))
        steps = [step for step in steps if step[0] in wanted]
    if cuda and any(name in ("grid_train", "grid_lstsq", "cka") for name, _ in steps):
        _train_paper_models(_missing_paper_models())
    out = os.environ.get("BENCH_OUT") or str(
        Path(__file__).parent / "results" / f"{'gpu' if cuda else 'cpu'}-{datetime.now(UTC):%Y-%m-%d}.jsonl")
    failed = []
    for name, extra in steps:
        print(f"--- bench.{name} {' '.join(extra)}", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], env={**os.environ, "BENCH_OUT": out})
        if done.returncode:
            failed.append(name)
    print(f"results appended to {out}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
