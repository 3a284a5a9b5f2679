"""The Stitching page's recipes end to end, as a user waits for them (model loading included).

Each recipe of ``core.runs.recipes.RECIPES`` with the Quick budget (2,000 training / 1,000 test images)
on the zoo's default pair (zoo/resnet_1111-s0 -> zoo/resnet_2222-s0, 45 pairs), run once each
in a fresh model cache; prints the time, the number of fused chunks the memory plan made for the grid (see
``STITCHLAB_CPU_CHUNK_MB``) and the mean accuracy. The Paper recipe (3 epochs from a random
start) takes minutes on a CPU: ask for it with ``--recipes instant,standard,paper``.
"""

from __future__ import annotations

import argparse
import os
import time

from core.data.datasets import load_dataset
from core.engine import grid as grid_module
from core.engine.grid import run_grid
from core.models.network import _cached_model

from ._util import emit, sync


def main(argv=None) -> dict:
    from core.device import resolve_device
    from core.runs.recipes import grid_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="instant,standard")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")  # file reading is not the grid
    plans = []
    planner = grid_module._plan_chunks

    def counting_planner(*a, **k):
        chunks = planner(*a, **k)
        plans.append(len(chunks))
        return chunks

    grid_module._plan_chunks = counting_planner
    figures = {}
    try:
        for key in args.recipes.split(","):
            config = grid_config("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", key, "quick")
            _cached_model.cache_clear()
            plans.clear()
            sync(device)
            start = time.perf_counter()
            result = run_grid(config, device=device)
            sync(device)
            values = [v for row in result.matrix() for v in row if v is not None]
            figures[key] = {"seconds": round(time.perf_counter() - start, 2), "chunks": plans[0],
                            "mean_accuracy": round(sum(values) / len(values), 4)}
            print(key, figures[key], flush=True)
    finally:
        grid_module._plan_chunks = planner
    return emit("recipes", device, pair="zoo/resnet_1111-s0 -> zoo/resnet_2222-s0", budget="Quick",
                cpu_chunk_mb=os.environ.get("STITCHLAB_CPU_CHUNK_MB", "default"), recipes=figures)


if __name__ == "__main__":
    main()
