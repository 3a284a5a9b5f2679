"""CKA matrices as stored runs: computed once per configuration, read back without recomputing.

A CKA run (kind ``cka``) keeps its :class:`core.cka.CkaResult` as the artifact ``result``;
its configuration (models, layers, kernel, sigma, images, batch size, dataset, model weights)
is its identity, as for grids.
"""

from __future__ import annotations

from .results import _fingerprint

__all__ = ["cka_config", "run_cka", "find_cka", "load_cka"]

_FIELDS = ("model_a", "model_b", "layers_a", "layers_b", "kernel", "sigma", "batch_size", "limit", "dataset")


def cka_config(model_a: str, model_b: str, layers_a=None, layers_b=None, kernel: str = "linear",
               sigma: float = 0.8, batch_size: int = 500, limit: int | None = None,
               dataset: str = "fashion-mnist") -> dict:
    return {"model_a": model_a, "model_b": model_b, "layers_a": list(layers_a) if layers_a else None,
            "layers_b": list(layers_b) if layers_b else None, "kernel": kernel, "sigma": sigma,
            "batch_size": batch_size, "limit": limit, "dataset": dataset}


def _identity(config: dict) -> dict:
    return {**config, "weights_a": _fingerprint(config["model_a"]), "weights_b": _fingerprint(config["model_b"])}


def find_cka(store, config: dict) -> dict | None:
    """The newest finished CKA run with this configuration and these model weights, or None (no
    torch needed)."""
    run = store.find_run("cka", _identity(config))
    return run if run is not None and run["status"] == "done" else None


def load_cka(store, run_id: str) -> dict:
    """A stored CKA result as ``CkaResult.to_json()``."""
    return store.get_artifact(run_id, "result")


def run_cka(params: dict, store, device="auto", progress=None, cancel=None, name: str | None = None) -> str:
    """Compute (or reuse) a CKA matrix and store it; returns the run id."""
    from .cka_models import model_cka
    from .fused import Cancelled

    config = cka_config(**{k: v for k, v in params.items() if k in _FIELDS})
    previous = find_cka(store, config)
    if previous is not None:
        return previous["id"]
    run_id = store.create_run("cka", _identity(config), name)

    def report(fraction: float, message: str) -> None:
        if progress:
            progress({"fraction": fraction, "message": message, "eta": None, "run_id": run_id})

    try:
        result = model_cka(config["model_a"], config["model_b"], config["layers_a"], config["layers_b"],
                           config["dataset"], config["limit"], config["batch_size"], config["kernel"],
                           config["sigma"], device, report, cancel)
    except Cancelled:
        store.update_run(run_id, status="cancelled", message="cancelled by the user")
        raise
    except BaseException as exc:
        store.update_run(run_id, status="failed", message=f"{type(exc).__name__}: {exc}")
        raise
    data = result.to_json()
    store.put_artifact(run_id, "result", data)
    store.update_run(run_id, status="done", seconds=data["seconds"],
                     summary={"layers_a": data["layers_a"], "layers_b": data["layers_b"],
                              "n_examples": data["n_examples"]})
    return run_id
