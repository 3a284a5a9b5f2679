"""Linear CKA between two ResNet-18s, 9 x 9 layers, 10,000 Fashion-MNIST test images, batches of 500:
StitchLab against pytorch-cka and torch_cka, timed in the same run and checked against a
float64 reference of the same minibatch estimator (Nguyen et al. 2021).

pytorch-cka and torch_cka are not project dependencies: install them in the benchmark's own
environment (``pip install pytorch-cka torch-cka``); a library that is missing is skipped.
Models: ``paper/resnet_2222-s0`` and ``-s1`` (ResNet-18 = blocks 2222 at width 64).
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
from torch.utils.data import DataLoader, TensorDataset

from core.data.datasets import load_dataset
from core.device import resolve_device
from core.engine.layers import list_layers, sender_prefix
from core.models.network import cached_model
from core.similarity.cka import gram_precision, hsic_unbiased
from core.similarity.networks import model_cka

from ._util import emit, random_resnet, timer


def reference(net_a, net_b, layers_a, layers_b, images, batch: int) -> torch.Tensor:
    """The minibatch unbiased CKA from the textbook formula, every step in float64."""
    pa, pb = sender_prefix(net_a, layers_a), sender_prefix(net_b, layers_b)
    cross = torch.zeros(len(layers_a), len(layers_b), dtype=torch.float64)
    self_a, self_b = torch.zeros(len(layers_a), dtype=torch.float64), torch.zeros(len(layers_b), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            ka = [(f.flatten(1).double() @ f.flatten(1).double().T) for f in pa(x)]
            kb = [(f.flatten(1).double() @ f.flatten(1).double().T) for f in pb(x)]
            for i, K in enumerate(ka):
                self_a[i] += hsic_unbiased(K, K).cpu()
                for j, L in enumerate(kb):
                    cross[i, j] += hsic_unbiased(K, L).cpu()
            for j, L in enumerate(kb):
                self_b[j] += hsic_unbiased(L, L).cpu()
    return cross / torch.sqrt(torch.outer(self_a, self_b))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-a", default="paper/resnet_2222-s0")
    parser.add_argument("--model-b", default="paper/resnet_2222-s1")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--random-width", type=int, default=0,
                        help="instead of the paper models: two random-weight ResNet-18s of this width (timing "
                             "does not depend on the weights)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.random_width:
        net_a, net_b = (random_resnet("2222", args.random_width, seed, device,
                                       name=f"random ResNet-18 (width {args.random_width}, seed {seed})")
                         for seed in (0, 1))
        args.model_a, args.model_b = net_a.name, net_b.name
    else:
        net_a, net_b = cached_model(args.model_a, str(device)), cached_model(args.model_b, str(device))
    layers_a, layers_b = list_layers(net_a), list_layers(net_b)
    names_a, names_b = [lay.name for lay in layers_a], [lay.name for lay in layers_b]
    data = load_dataset("fashion-mnist", "test", args.images)
    images = net_a.prepare(data.images.to(device).float() / 255)
    loader = DataLoader(TensorDataset(images), batch_size=args.batch_size, shuffle=False)
    ref = reference(net_a, net_b, layers_a, layers_b, images, args.batch_size)
    out: dict = {"model_a": args.model_a, "model_b": args.model_b, "layers": f"{len(names_a)} x {len(names_b)}",
                 "images": len(data), "batch_size": args.batch_size, "libraries": {}}

    def record(name, run):
        run()  # warm-up: cuDNN autotuning, allocator, lazy imports
        figures: dict = {}
        with timer(device, figures, "seconds"):
            matrix = run()
        figures["max_abs_diff_vs_float64_reference"] = float((matrix.double().cpu() - ref).abs().max())
        out["libraries"][name] = figures
        print(name, figures, flush=True)

    # "auto" (the default) is float32 on a CPU and float64 on a GPU (core.similarity.kernels.gram_precision);
    # tf32x3 is a CUDA-only method (float64 elsewhere).
    out["auto_gram"] = gram_precision("auto", device)
    for gram in ("float64", "float32") + (("tf32x3",) if device.type == "cuda" else ()):
        record(f"stitchlab ({gram} Gram)", lambda gram=gram: torch.tensor(model_cka(
            net_a, net_b, names_a, names_b, limit=args.images, batch_size=args.batch_size, device=device,
            gram=gram).cka, dtype=torch.float64))  # CkaResult holds Python floats: keep their 53 bits
    try:
        from cka import compute_cka  # pytorch-cka

        record("pytorch-cka", lambda: compute_cka(net_a.module, net_b.module, loader, layers=names_a,
                                                   model2_layers=names_b, device=device, progress=False)[0])
    except ImportError:
        out["libraries"]["pytorch-cka"] = "not installed"
    try:
        from torch_cka import CKA as TorchCKA

        def torch_cka_run():
            cka = TorchCKA(net_a.module, net_b.module, "a", "b", names_a, names_b, device=str(device))
            with contextlib.redirect_stderr(io.StringIO()):
                cka.compare(loader)
            return cka.export()["CKA"]

        record("torch_cka", torch_cka_run)
    except ImportError:
        out["libraries"]["torch_cka"] = "not installed"
    return emit("cka", device, **out)


if __name__ == "__main__":
    main()
