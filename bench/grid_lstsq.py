"""Least-squares grid, end to end (model loading included).

On CUDA: R1111 -> R2222 at width 64 (``paper/`` models), 45 pairs, every training image for the
normal equations, scored on every test image. On a CPU: the zoo's default pair
(zoo/resnet_1111-s0 -> zoo/resnet_2222-s0) with the dashboard's Instant + Quick settings
(2,000 training images, 1,000 test images).
"""

from __future__ import annotations

import time

import torch

from core.data.datasets import load_dataset
from core.engine.grid import run_grid
from core.models.network import _cached_model

from ._util import emit, grid_arguments, sync


def main(argv=None) -> dict:
    args, device, sender, receiver = grid_arguments(__doc__.splitlines()[0], argv)
    gpu = device.type == "cuda"
    train_limit = args.train_limit if args.train_limit else (None if gpu else 2000)
    eval_limit = args.eval_limit if args.eval_limit else (None if gpu else 1000)
    config = {"sender": sender, "receiver": receiver, "mode": "lstsq", "train_limit": train_limit,
              "eval_limit": eval_limit}
    load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")  # file reading is not the grid
    runs, stages = [], []
    # The first run includes loading the models and CUDA/cuDNN warm-up; the second loads the
    # models again; the third keeps them, as the dashboard's worker does between grids (their
    # reference scores are kept with them).
    for keep_models in (False, False, True):
        if not keep_models:
            _cached_model.cache_clear()
        sync(device)
        start, marks = time.perf_counter(), {}
        result = run_grid(config, device=device, progress=lambda event, marks=marks, start=start: marks.setdefault(
            event.stage, time.perf_counter() - start))
        sync(device)
        runs.append(round(time.perf_counter() - start, 3))
        # Seconds per stage, from the first progress event of each to the next one's (asynchronous
        # GPU work can spill over a boundary; the total is synchronised).
        names, times = list(marks), list(marks.values()) + [runs[-1]]
        stages.append({name: round(times[k + 1] - times[k], 3) for k, name in enumerate(names)})
    values = [v for row in result.matrix() for v in row if v is not None]
    return emit("grid_lstsq", device, sender=sender, receiver=receiver, pairs=len(values),
                train_images=train_limit or 60000, test_images=eval_limit or 10000,
                first_run_s=runs[0], second_run_s=runs[1], kept_models_run_s=runs[2], stages_s=stages,
                accuracy_range=[min(values), max(values)], threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
