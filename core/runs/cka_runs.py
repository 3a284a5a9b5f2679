"""CKA matrices as stored runs: computed once per configuration, read back without recomputing.

A CKA run (kind ``cka``) keeps its :class:`core.similarity.networks.CkaResult` as the artifact
``result``; its configuration (models, layers, kernel, sigma, images, batch size, dataset)
plus the models' weights is its identity, as for grids. Pages reach it through
:mod:`core.runs.service` (``find``/``submit``/``load``).
"""

from __future__ import annotations

from dataclasses import replace

from core.models.sources import fingerprint
from core.progress import Progress, Status
from core.runs.lifecycle import lifecycle

__all__ = ["cka_config", "cka_config_of", "cka_identity", "run_cka", "load_cka"]

_FIELDS = ("model_a", "model_b", "layers_a", "layers_b", "kernel", "sigma", "batch_size", "limit", "dataset")


def cka_config(model_a: str, model_b: str, layers_a=None, layers_b=None, kernel: str = "linear",
               sigma: float = 0.8, batch_size: int = 500, limit: int | None = None,
               dataset: str = "fashion-mnist") -> dict:
    return {"model_a": model_a, "model_b": model_b, "layers_a": list(layers_a) if layers_a else None,
            "layers_b": list(layers_b) if layers_b else None, "kernel": kernel, "sigma": sigma,
            "batch_size": batch_size, "limit": limit, "dataset": dataset}


def cka_config_of(params: dict) -> dict:
    """A full CKA configuration from a dict of some of its fields; unknown fields are refused."""
    unknown = set(params) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown CKA settings {sorted(unknown)}; known: {list(_FIELDS)}")
    return cka_config(**params)


def cka_identity(config: dict) -> dict:
    return {**config, "weights_a": fingerprint(config["model_a"]), "weights_b": fingerprint(config["model_b"])}


def load_cka(store, run_id: str) -> dict:
    """A stored CKA result as ``CkaResult.to_json()``."""
    return store.get_artifact(run_id, "result")


def run_cka(params: dict, store, device="auto", progress=None, cancel=None, name: str | None = None) -> str:
    """Compute (or reuse) a CKA matrix and store it; returns the run id. ``cancel`` is asked
    before every batch."""
    from core.similarity.networks import model_cka

    config = cka_config_of(params)
    with lifecycle(store) as life:
        run_id, previous = life.open("cka", cka_identity(config), name)
        if previous is not None and previous["status"] == Status.DONE:
            return run_id

        def report(event: Progress) -> None:
            if progress:
                progress(replace(event, run_id=run_id))

        result = model_cka(config["model_a"], config["model_b"], config["layers_a"], config["layers_b"],
                           config["dataset"], config["limit"], config["batch_size"], config["kernel"],
                           config["sigma"], device, report, cancel)
        data = result.to_json()
        store.put_artifact(run_id, "result", data)
        life.done(run_id, seconds=data["seconds"], summary={"layers_a": data["layers_a"], "layers_b": data["layers_b"],
                                                            "n_examples": data["n_examples"]})
    return run_id
