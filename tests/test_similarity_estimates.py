"""The Similarity page's time hint under Compute: each index's seconds scaled to its images (as
their square) and layer pairs, from the newest run of it stored here, else from the figures
measured on 2 CPU cores; and the page shows it while something is missing."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core import paths, runs
from core.progress import Status
from core.runs.estimates import similarity_estimate
from core.runs.similarity_runs import similarity_config
from core.runs.store import Store


def test_without_history_the_measured_figures_are_scaled_to_images_and_layer_pairs(tmp_path):
    store = Store(tmp_path / "empty.sqlite3")
    base = similarity_estimate(store, "procrustes", 2000, 45)
    assert base.seconds == pytest.approx(42.5) and "2 CPU cores" in base.source
    assert similarity_estimate(store, "procrustes", 4000, 45).seconds == pytest.approx(4 * 42.5)
    assert similarity_estimate(store, "procrustes", 2000, 90).seconds == pytest.approx(2 * 42.5)
    assert similarity_estimate(store, "no-such-index", 2000, 45) is None


def test_the_newest_run_stored_here_is_what_is_scaled(tmp_path):
    store = Store(tmp_path / "history.sqlite3")
    config = similarity_config("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", ["svcca"], limit=1000)
    run_id = store.create_run("similarity", runs.identity("similarity", config, None))
    store.put_artifact(run_id, "result", {"layers_a": ["a", "b"], "layers_b": ["x", "y"], "n_examples": 1000,
                                          "measures": {"svcca": {"seconds": 10.0}}})
    store.update_run(run_id, status=Status.DONE)
    found = similarity_estimate(store, "svcca", 2000, 8)
    assert found.seconds == pytest.approx(10.0 * 4 * 2) and "1,000 images here" in found.source
    assert similarity_estimate(store, "rsa", 2000, 45).seconds == pytest.approx(26.5)  # not this index's run


def test_the_page_says_how_long_compute_should_take(app_db):
    at = AppTest.from_file(str(paths.PROJECT_ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/cka.py")
    at.query_params.update({"cka_images": "5000"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (hint,) = [c.value for c in at.caption if "on this CPU" in c.value]
    assert "Linear CKA about 32 s" in hint and "as the square of the images" in hint  # 5.1 s x 6.25
