"""Similarity matrices as stored runs (kind ``similarity``): computed once per configuration, read back.

A run keeps the :class:`core.similarity.networks.SimilarityResult` of its indices as the
artifact ``result``. Its configuration (models, layers, the *set* of measures, images, dataset)
plus the models' weights is its identity, as for CKA runs; the measures are stored sorted, so
``["svcca", "linear-cka"]`` and ``["linear-cka", "svcca"]`` are one run.

The Similarity page and the CLI ask for one run per index (:func:`similarity_configs`): adding
an index to a selection later computes only that index. Configurations queued as one job share
one pass over the images (:func:`run_similarity`): the features are collected once for all the
indices of runs that differ only in their measures.
"""

from __future__ import annotations

import json
from dataclasses import replace

from core.models.sources import fingerprint
from core.progress import Progress, Status
from core.runs.lifecycle import lifecycle
from core.similarity.catalogue import check_measure_names

__all__ = ["load_similarity", "merge_results", "run_similarity", "similarity_config", "similarity_config_of",
           "similarity_configs", "similarity_identity"]

_FIELDS = ("model_a", "model_b", "measures", "layers_a", "layers_b", "limit", "dataset")


def similarity_config(model_a: str, model_b: str, measures, layers_a=None, layers_b=None, limit: int | None = None,
                      dataset: str = "fashion-mnist") -> dict:
    """The configuration of one run; ``measures`` as a set (checked, sorted)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit is a number of test images, at least 1 (or None for all), got {limit!r}")
    return {"model_a": model_a, "model_b": model_b, "measures": sorted(check_measure_names(measures)),
            "layers_a": list(layers_a) if layers_a else None, "layers_b": list(layers_b) if layers_b else None,
            "limit": limit, "dataset": dataset}


def similarity_configs(model_a: str, model_b: str, measures, **settings) -> list[dict]:
    """One configuration per measure, in the order given: what the page and the CLI store."""
    return [similarity_config(model_a, model_b, [name], **settings) for name in check_measure_names(measures)]


def similarity_config_of(params: dict) -> dict:
    """A full configuration from a dict of some of its fields; unknown fields are refused."""
    unknown = set(params) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown similarity settings {sorted(unknown)}; known: {list(_FIELDS)}")
    if "measures" not in params:
        raise ValueError("name the similarity measures to compute (measures=[...])")
    return similarity_config(**params)


def similarity_identity(config: dict) -> dict:
    return {**config, "weights_a": fingerprint(config["model_a"]), "weights_b": fingerprint(config["model_b"])}


def load_similarity(store, run_id: str) -> dict:
    """A stored similarity result as ``SimilarityResult.to_json()``."""
    return store.get_artifact(run_id, "result")


def merge_results(results: list[dict], order=None) -> dict:
    """Stored results of the same models, layers and images as one, their measures in ``order``
    (default: as they come)."""
    merged = dict(results[0])
    measures = {name: m for result in results for name, m in result["measures"].items()}
    merged["measures"] = {name: measures[name] for name in (order or measures) if name in measures}
    return merged


def _shared_pass(config: dict) -> str:
    """What decides the features: everything but the measures."""
    return json.dumps({k: v for k, v in config.items() if k != "measures"}, sort_keys=True)


def run_similarity(configs: list[dict], store, device="auto", progress=None, cancel=None,
                   name: str | None = None) -> list[str]:
    """Compute (or reuse) the similarity runs of ``configs`` and store them; returns their run ids.

    Runs that differ only in their measures are computed from one pass over the images (their
    measures' union). ``cancel`` is asked before every batch and every index."""
    from core.similarity.networks import model_similarity

    configs = [similarity_config_of(c) for c in configs]
    run_ids: list[str] = []
    with lifecycle(store) as life:
        passes: dict[str, list[tuple[str, dict]]] = {}
        for config in configs:
            run_id, previous = life.open("similarity", similarity_identity(config), name)
            run_ids.append(run_id)
            if previous is not None and previous["status"] == Status.DONE:
                life.finished(run_id)
                continue
            passes.setdefault(_shared_pass(config), []).append((run_id, config))
        for k, members in enumerate(passes.values()):
            first = members[0][1]
            measures = list(dict.fromkeys(m for _, config in members for m in config["measures"]))

            def report(event: Progress, k=k, run_id=members[0][0]) -> None:
                if progress:
                    progress(replace(event, fraction=(k + event.fraction) / len(passes), run_id=run_id))

            result = model_similarity(first["model_a"], first["model_b"], measures, first["layers_a"],
                                      first["layers_b"], first["dataset"], first["limit"], device, report,
                                      cancel).to_json()
            for run_id, config in members:
                data = {**result, "measures": {m: result["measures"][m] for m in config["measures"]}}
                store.put_artifact(run_id, "result", data)
                life.done(run_id, seconds=result["seconds"],
                          summary={"measures": config["measures"], "layers_a": result["layers_a"],
                                   "layers_b": result["layers_b"], "n_examples": result["n_examples"]})
    return run_ids
