"""A grid and its three random-network controls, fused in one data pass, against the grid alone.

Target: the four grids in at most 4x the time of one. Task-loss training (1 epoch of the
training images given, default 15,000 on CUDA), R1111 -> R2222 at width 64 on CUDA, the zoo's
width-16 pair on a CPU.
"""

from __future__ import annotations

from core.engine.grid import run_grid, run_grids
from core.models.network import cached_model

from ._util import emit, grid_arguments, timer

CONTROLS = ("none", "random-sender", "random-receiver", "random-both")


def main(argv=None) -> dict:
    args, device, sender, receiver = grid_arguments(__doc__.splitlines()[0], argv)
    gpu = device.type == "cuda"
    pair = {"sender": sender, "receiver": receiver}
    base = {**pair, "mode": "train", "epochs": 1.0, "train_limit": args.train_limit or (15000 if gpu else 1000),
            "eval_limit": args.eval_limit or (10000 if gpu else 500)}
    for control in CONTROLS:  # load every network before timing
        if control != "none":
            run_grid({**base, "control": control, "train_limit": 256, "eval_limit": 100,
                      "sender_layers": ["layer4.0"], "receiver_layers": ["layer4.1"]}, device=device)
    cached_model(pair["sender"], str(device))
    figures: dict = {}
    with timer(device, figures, "single_grid_s"):
        run_grid(base, device=device)
    with timer(device, figures, "four_grids_fused_s"):
        results = run_grids([{**base, "control": c} for c in CONTROLS], device=device)
    figures["ratio"] = round(figures["four_grids_fused_s"] / figures["single_grid_s"], 2)
    figures["mean_accuracy"] = {c: round(sum(v for row in r.matrix() for v in row if v is not None)
                                         / sum(v is not None for row in r.matrix() for v in row), 4)
                                for c, r in zip(CONTROLS, results)}
    return emit("grid_controls", device, **pair, train_images=base["train_limit"], test_images=base["eval_limit"],
                **figures)


if __name__ == "__main__":
    main()
