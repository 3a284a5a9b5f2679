"""Every similarity index on the Stitching page's default pair, against NumPy float64 references.

The features of ``--images`` Fashion-MNIST test images (2,000) at every grid layer of the default
sender and receiver (zoo/resnet_1111-s0, 5 layers; zoo/resnet_2222-s0, 9 layers; 16,384 to 2,048
features each) are collected once, float32 on the CPU, as the Similarity page's worker holds
them. Then, for each index: StitchLab's ``MEASURES[name].matrix`` (all 45 cells), timed, and the
straightforward NumPy float64 implementation of tests/similarity_reference.py on the same
features, timed in the same run, with the largest difference between the two matrices.

The references cannot take 16,384-wide layers as they are (a 16,384 x 16,384 cross-covariance per
pair), so each layer is first replaced by exact coordinates with the same inner products between
examples (``isometric_coordinates``: NumPy's QR, timed once as ``reference_coordinates_s``),
which changes none of the indices; PWCCA's reference also gets side a's original neurons for its
weights. Each reference's time excludes that shared step.

    python -m bench.similarity_indices                       # every index
    python -m bench.similarity_indices --measures svcca,rsa  # some
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from core.data.datasets import load_dataset
from core.engine.fused import engine_prefix
from core.engine.layers import list_layers
from core.models.catalog import DEFAULT_RECEIVER, DEFAULT_SENDER
from core.models.network import cached_model
from core.similarity.encoding import encoding_split
from core.similarity.measures import MEASURES, check_measures
from tests import similarity_reference as ref

from ._util import emit


def features(model: str, images: torch.Tensor, batch_size: int = 500) -> tuple[list[str], list[torch.Tensor]]:
    """Every grid layer's activations, float32 on the CPU, run as the engine runs the network."""
    net = cached_model(model, "cpu")
    layers = list_layers(net)
    prefix = engine_prefix(net, layers)
    with torch.no_grad():
        batches = [prefix(net.prepare(images[s:s + batch_size])) for s in range(0, len(images), batch_size)]
    return [lay.name for lay in layers], [torch.cat([b[k] for b in batches]).contiguous() for k in range(len(layers))]


def reference(name: str, coords_a, coords_b, neurons_a, n: int) -> np.ndarray:
    if name == "pwcca":
        return ref.pwcca_matrix(coords_a, coords_b, neurons_a=neurons_a)
    if name == "linear-encoding":
        return ref.linear_encoding_matrix(coords_a, coords_b, [s.numpy() for s in encoding_split(n)])
    return getattr(ref, f"{name.replace('-', '_')}_matrix")(coords_a, coords_b)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sender", default=DEFAULT_SENDER)
    parser.add_argument("--receiver", default=DEFAULT_RECEIVER)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--measures", default=",".join(MEASURES))
    args = parser.parse_args(argv)
    names = check_measures(args.measures.split(","))
    load = os.getloadavg()  # the machine is shared: timings depend on what else runs
    data = load_dataset("fashion-mnist", "test", args.images)
    images = data.images.float() / 255
    start = time.perf_counter()
    names_a, feats_a = features(args.sender, images)
    names_b, feats_b = features(args.receiver, images)
    features_s = time.perf_counter() - start
    n = len(images)

    start = time.perf_counter()
    coords_a, coords_b = ([ref.isometric_coordinates(x.numpy()) for x in side] for side in (feats_a, feats_b))
    coordinates_s = time.perf_counter() - start
    neurons_a = [x.numpy() for x in feats_a]

    indices: dict = {}
    for name in names:
        start = time.perf_counter()
        got = MEASURES[name].matrix(feats_a, feats_b, names_a, names_b).numpy()
        stitchlab_s = time.perf_counter() - start
        start = time.perf_counter()
        expected = reference(name, coords_a, coords_b, neurons_a, n)
        reference_s = time.perf_counter() - start
        indices[name] = {"stitchlab_s": round(stitchlab_s, 2), "numpy_reference_s": round(reference_s, 2),
                         "max_abs_diff": float(np.abs(got - expected).max()),
                         "range": [round(float(got.min()), 4), round(float(got.max()), 4)]}
        print(name, indices[name], flush=True)
    return emit("similarity_indices", torch.device("cpu"), sender=args.sender, receiver=args.receiver, images=n,
                layers=f"{len(names_a)} x {len(names_b)}", features_s=round(features_s, 2),
                reference_coordinates_s=round(coordinates_s, 2), indices=indices,
                threads=torch.get_num_threads(), load_average_at_start=load, load_average_at_end=os.getloadavg())


if __name__ == "__main__":
    main()
