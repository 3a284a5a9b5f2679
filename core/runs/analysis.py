"""The dashboard's smaller computations as stored runs, so that pages only ask and read:

* ``predictions``: a network's answer on every test image (to browse images by class and by
  whether it is right);
* ``attributions``: captum maps of sender, receiver and a stitched network on one image;
* ``stitch-cka``: CKA between one stitch's output and the receiver's own activation.

Each runs in the job worker (:mod:`core.runs.service` registers them), is stored once per identity
(configuration plus the weights it used) and is read back without recomputing.
"""

from __future__ import annotations

import hashlib
import time

from core.models.sources import fingerprint
from core.progress import Reporter, Status, check_cancel
from core.runs.lifecycle import lifecycle

__all__ = ["predictions_config", "attributions_config", "stitch_cka_config", "run_predictions", "run_attributions",
           "run_stitch_cka", "identity_of", "load_artifact", "image_key"]

_SCORING_BATCH = 256


def predictions_config(model: str, dataset: str = "fashion-mnist") -> dict:
    return {"model": model, "dataset": dataset}


def attributions_config(sender: str, receiver: str, dataset: str = "fashion-mnist", method: str = "ig",
                        index: int | None = None, pixels: list | None = None, run_id: str | None = None,
                        cell: list[str] | None = None, use_true_label: bool = False) -> dict:
    """One image (test image ``index``, or ``pixels``: an upload as ``(C, H, W)`` values in
    0..255 at the dataset's size) explained by ``method`` for sender, receiver and, with
    ``run_id`` and ``cell``, the stitched network of that stored grid's cell."""
    from core.attribution.maps import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}: choose one of {', '.join(METHODS)}")
    if (index is None) == (pixels is None):
        raise ValueError("give either a test image index or an uploaded image's pixels")
    if (run_id is None) != (cell is None):
        raise ValueError("a stitched network needs both the grid's run id and its cell [sender layer, receiver layer]")
    return {"sender": sender, "receiver": receiver, "dataset": dataset, "method": method, "index": index,
            "pixels": pixels, "run_id": run_id, "cell": list(cell) if cell else None,
            "use_true_label": bool(use_true_label and pixels is None)}


def stitch_cka_config(run_id: str, sender_layer: str, receiver_layer: str, dataset: str = "fashion-mnist",
                      limit: int = 1000) -> dict:
    return {"run_id": run_id, "sender_layer": sender_layer, "receiver_layer": receiver_layer, "dataset": dataset,
            "limit": limit}


def image_key(pixels: list | None) -> str | None:
    """A short hash of an upload's pixels (the identity keeps the hash, the config the pixels)."""
    return None if pixels is None else hashlib.sha256(repr(pixels).encode()).hexdigest()[:16]


def identity_of(kind: str, config: dict) -> dict:
    """The configuration plus the weights' fingerprints: another upload under an old name is a
    new identity. A stitched network is identified by its stored run (runs never change)."""
    if kind == "predictions":
        return {**config, "weights": fingerprint(config["model"])}
    if kind == "attributions":
        return {**config, "pixels": image_key(config["pixels"]), "sender_weights": fingerprint(config["sender"]),
                "receiver_weights": fingerprint(config["receiver"])}
    return dict(config)  # stitch-cka: the run and cell say it all


def load_artifact(store, run_id: str):
    return store.get_artifact(run_id, "result")


def _stored(kind: str, config: dict, store, name, progress, cancel, compute) -> str:
    """Open the run, compute its artifact unless stored, mark it done; returns the run id."""
    with lifecycle(store) as life:
        run_id, previous = life.open(kind, identity_of(kind, config), name)
        if previous is not None and previous["status"] == Status.DONE:
            return run_id
        report = Reporter(progress, run_id=run_id)
        result = compute(report, cancel)
        store.put_artifact(run_id, "result", result)
        life.done(run_id, seconds=time.perf_counter() - report.start)
    return run_id


def run_predictions(config: dict, store, device="auto", progress=None, cancel=None, name=None) -> str:
    """The network's predicted class for every test image (and the true labels), stored."""
    def compute(report, cancel):
        import torch

        from core.data.datasets import load_dataset
        from core.device import resolve_device
        from core.models.network import cached_model

        dev = resolve_device(device)
        net = cached_model(config["model"], str(dev))
        data = load_dataset(config["dataset"], "test")
        if net.num_classes != data.info.num_classes:  # more classes than names: the page would index past them
            raise ValueError(f"{config['model']} predicts {net.num_classes} classes but {config['dataset']} has "
                             f"{data.info.num_classes}; pick a network trained on {config['dataset']}")
        out, total = [], -(-len(data) // _SCORING_BATCH)
        with torch.no_grad():
            for b, (images, _) in enumerate(data.batches(_SCORING_BATCH, dev)):
                check_cancel(cancel)
                out.append(net(images).argmax(-1).cpu())
                report("predictions", (b + 1) / total, f"scoring {config['model']}: batch {b + 1}/{total}")
        return {"labels": data.labels.tolist(), "predictions": torch.cat(out).tolist()}

    return _stored("predictions", config, store, name, progress, cancel, compute)


def run_attributions(config: dict, store, device="auto", progress=None, cancel=None, name=None) -> str:
    """Attributions of one image for sender, receiver and (if asked) the stitched network, stored
    as :meth:`core.attribution.maps.Attribution.to_json` per network, with the image."""
    def compute(report, cancel):
        import torch

        from core.attribution.methods import compare
        from core.data.datasets import load_dataset
        from core.engine.stitched import load_stitched
        from core.models.network import cached_model

        check_cancel(cancel)
        report("attribute", 0.05, "loading the networks and the image")
        data = load_dataset(config["dataset"], "test")
        if config["pixels"] is not None:
            image = torch.tensor(config["pixels"], dtype=torch.float32)[None] / 255.0
            true_label = None
        else:
            index = config["index"]
            if not 0 <= index < len(data):
                raise ValueError(f"test image #{index} does not exist: {config['dataset']} has {len(data)} test "
                                 f"images (0 to {len(data) - 1})")
            image, true_label = data.images[index:index + 1].float() / 255.0, int(data.labels[index])
        expected = tuple(data.info.image_shape)
        if tuple(image.shape[1:]) != expected:
            raise ValueError(f"the image is {tuple(image.shape[1:])}, {config['dataset']} images are {expected}")
        stitched = load_stitched(store, config["run_id"], *config["cell"]) if config["run_id"] else None
        check_cancel(cancel)
        report("attribute", 0.2, f"{config['method']} on the networks")
        target = torch.tensor([true_label]) if config["use_true_label"] and true_label is not None else None
        # A black baseline for the path methods: on Fashion-MNIST the mean image would make the
        # empty padding look important.
        extra = {"baseline": 0.0} if config["method"] in ("ig", "gradientshap") else {}
        results = compare(cached_model(config["sender"], "cpu"), cached_model(config["receiver"], "cpu"), stitched,
                          image, target=target, method=config["method"], **extra)
        return {"image": (image[0] * 255).round().to(torch.uint8).tolist(), "true_label": true_label,
                "results": {key: value.to_json() for key, value in results.items()}}

    return _stored("attributions", config, store, name, progress, cancel, compute)


def run_stitch_cka(config: dict, store, device="auto", progress=None, cancel=None, name=None) -> str:
    """CKA of one stored stitch's output against the receiver's own activation, stored."""
    def compute(report, cancel):
        from core.engine.stitched import load_stitched
        from core.similarity.networks import stitch_cka

        report("cka", 0.05, "loading the stitched network")
        net = load_stitched(store, config["run_id"], config["sender_layer"], config["receiver_layer"], device="cpu")
        value = stitch_cka(net.sender, net.receiver, config["sender_layer"], config["receiver_layer"],
                           net.module.stitch, dataset=config["dataset"], limit=config["limit"], device="cpu",
                           cancel=cancel)
        return {"cka": value}

    return _stored("stitch-cka", config, store, name, progress, cancel, compute)
