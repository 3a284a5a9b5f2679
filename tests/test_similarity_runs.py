"""The ``similarity`` job kind (identity, submit, find, load, cancel) and ``python -m core similarity``,
on the bundled zoo with a few images."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from core import runs
from core.errors import Cancelled
from core.progress import Status
from core.runs.similarity_runs import (
    load_similarity,
    run_similarity,
    similarity_config,
    similarity_configs,
    similarity_identity,
)
from core.runs.store import Store
from core.similarity import networks as similarity_networks
from core.similarity.measures import MEASURES

A, B = "zoo/resnet_1111-s0", "zoo/resnet_1111-s1"
SMALL = {"layers_a": ["stem", "layer4.0"], "layers_b": ["layer1.0"], "limit": 100}


@pytest.fixture
def passes(monkeypatch):
    """Every model_similarity call's measures: one entry per pass over the images."""
    calls = []
    compute = similarity_networks.model_similarity

    def counted(*args, **kwargs):
        calls.append(list(args[2]))
        return compute(*args, **kwargs)

    monkeypatch.setattr(similarity_networks, "model_similarity", counted)
    return calls


def test_the_measure_set_is_one_identity_in_any_order_and_the_rest_tells_runs_apart():
    key = runs.identity_key("similarity", similarity_config(A, B, ["rbf-cka", "linear-cka"], limit=100))
    assert key == runs.identity_key("similarity", similarity_config(A, B, ["linear-cka", "rbf-cka", "linear-cka"],
                                                                    limit=100))
    others = [similarity_config(A, B, ["linear-cka"], limit=100), similarity_config(A, B, ["rbf-cka", "linear-cka"]),
              similarity_config(A, B, ["rbf-cka", "linear-cka"], limit=200),
              similarity_config(A, B, ["rbf-cka", "linear-cka"], limit=100, dataset="cifar10"),
              similarity_config(B, A, ["rbf-cka", "linear-cka"], limit=100),
              similarity_config(A, B, ["rbf-cka", "linear-cka"], layers_a=["stem"], limit=100)]
    assert len({key, *(runs.identity_key("similarity", c) for c in others)}) == 1 + len(others)
    ident = similarity_identity(similarity_config(A, B, ["linear-cka"]))
    assert ident["weights_a"] and ident["weights_b"] and ident["measures"] == ["linear-cka"]


def test_bad_settings_are_one_clear_line():
    known = re.escape(", ".join(MEASURES))
    with pytest.raises(ValueError, match=rf"^unknown similarity measure 'cca': choose from {known}$"):
        runs.identity_key("similarity", {"model_a": A, "model_b": B, "measures": ["cca"]})
    with pytest.raises(ValueError, match=r"^unknown similarity settings \['kernel'\]"):
        runs.identity_key("similarity", {"model_a": A, "model_b": B, "measures": ["linear-cka"], "kernel": "rbf"})
    with pytest.raises(ValueError, match=r"^name the similarity measures"):
        runs.identity_key("similarity", {"model_a": A, "model_b": B})
    with pytest.raises(ValueError, match=r"^limit is a number of test images, at least 1"):
        similarity_config(A, B, ["linear-cka"], limit=0)


def test_submitted_twice_computed_once_in_one_pass_found_and_loaded(store, passes):
    configs = similarity_configs(A, B, ["rbf-cka", "linear-cka"], **SMALL)
    assert [c["measures"] for c in configs] == [["rbf-cka"], ["linear-cka"]]
    first = runs.submit(store, "similarity", configs, "cpu")
    assert first.job_id is not None
    assert runs.submit(store, "similarity", configs, "cpu").job_id is None  # queued already: followed
    runs.serve(store.path, poll=0.01, idle_exit=0.05)
    assert passes == [["rbf-cka", "linear-cka"]]  # both measures from one pass over the images
    assert runs.submit(store, "similarity", configs, "cpu").job_id is None  # stored
    for config in configs:
        (name,) = config["measures"]
        run = runs.find(store, "similarity", config)
        assert run["status"] == Status.DONE and run["summary"]["measures"] == [name]
        result = runs.load(store, run["id"])
        assert list(result["measures"]) == [name] and result["n_examples"] == 100
        assert result["layers_a"] == SMALL["layers_a"] and len(result["measures"][name]["matrix"]) == 2
    # A stored measure is not computed again beside a new one (the CKA kind is there too, untouched).
    assert run_similarity(similarity_configs(A, B, ["linear-cka"], **SMALL), store, "cpu")
    assert passes == [["rbf-cka", "linear-cka"]]
    assert "cka" in runs.KINDS


def test_a_measure_set_is_one_run_with_every_measure(store, passes):
    (run_id,) = run_similarity([similarity_config(A, B, ["linear-cka", "rbf-cka"], **SMALL)], store, "cpu")
    assert list(load_similarity(store, run_id)["measures"]) == ["linear-cka", "rbf-cka"]
    assert runs.find(store, "similarity", similarity_config(A, B, ["rbf-cka", "linear-cka"], **SMALL))["id"] == run_id


def test_a_cancelled_run_is_marked_so_and_resumed_later(store):
    config = similarity_config(A, B, ["linear-cka"], **SMALL)
    with pytest.raises(Cancelled):
        run_similarity([config], store, "cpu", cancel=lambda: True)
    (run,) = store.list_runs("similarity")
    assert run["status"] == Status.CANCELLED
    assert runs.find(store, "similarity", config) is None
    progress = []
    (run_id,) = run_similarity([config], store, "cpu", progress=progress.append)
    assert run_id == run["id"] and runs.find(store, "similarity", config)["id"] == run_id
    assert progress[-1].fraction == 1.0 and {e.run_id for e in progress} == {run_id}


# --- python -m core similarity --------------------------------------------------------------------
def test_cli_writes_json_of_every_measure(tmp_path):
    path = tmp_path / "similarity.json"
    out = subprocess.run([sys.executable, "-m", "core", "similarity", A, B, "--measure", "rbf-cka,linear-cka",
                          "--layers-a", "stem,layer4.0", "--layers-b", "layer1.0", "--limit", "100", "--device", "cpu",
                          "--quiet", "--json", str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert list(data["measures"]) == ["rbf-cka", "linear-cka"] and data["n_examples"] == 100
    for measure in data["measures"].values():
        assert len(measure["matrix"]) == 2 and all(len(row) == 1 and 0 <= row[0] <= 1 for row in measure["matrix"])
        assert measure["higher_is_similar"] is True and measure["seconds"] >= 0


def test_cli_unknown_measure_is_one_line_listing_the_known_ones(capsys):
    from core.cli import main

    code = main(["similarity", A, B, "--measure", "linear-cka,cca", "--json", "-"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [f"error: unknown similarity measure 'cca': choose from {', '.join(MEASURES)}"]


def test_cli_with_a_store_keeps_one_run_per_measure_and_reuses_them(tmp_path, capsys, passes):
    from core.cli import main

    db = tmp_path / "cli.sqlite3"
    args = ["similarity", A, B, "--layers-a", "stem,layer4.0", "--layers-b", "layer1.0", "--limit", "100",
            "--device", "cpu", "--quiet", "--db", str(db), "--json", "-"]
    assert main([*args, "--measure", "linear-cka"]) == 0
    assert main([*args, "--measure", "rbf-cka,linear-cka"]) == 0
    assert passes == [["linear-cka"], ["rbf-cka"]]  # linear CKA was stored: only RBF CKA computed
    printed = capsys.readouterr().out
    second = json.loads(printed[printed.index("}\n{") + 2:])
    assert list(second["measures"]) == ["rbf-cka", "linear-cka"]
    store = Store(db)
    for config in similarity_configs(A, B, ["linear-cka", "rbf-cka"], **SMALL):
        assert runs.find(store, "similarity", config) is not None  # what the page looks for


def test_a_stored_result_is_found_only_for_the_same_weights(store):
    config = similarity_config(A, B, ["linear-cka"], limit=100)
    stale = store.create_run("similarity", {**similarity_identity(config), "weights_b": "weights that changed since"})
    store.update_run(stale, status=Status.DONE)
    assert runs.find(store, "similarity", config) is None
    current = store.create_run("similarity", similarity_identity(config))
    store.update_run(current, status=Status.DONE)
    assert runs.find(store, "similarity", config)["id"] == current
