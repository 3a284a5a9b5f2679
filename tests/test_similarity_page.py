"""The Similarity page, headless (AppTest), on an empty store with the bundled grids: pick measures,
queue them once, draw each beside the stitching grid, rank them against it; refusals in one line."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from core import paths, runs
from core.runs import jobs
from core.runs.store import Store

APP = str(paths.PROJECT_ROOT / "app.py")


def _similarity_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/cka.py")
    at.query_params.update(params)
    at.run()
    _no_trouble(at)
    return at


def _no_trouble(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> list[str]:
    return [c.key for c in at.get("plotly_chart")]


def test_two_measures_queued_once_drawn_and_ranked_against_the_grid(app_db):
    at = _similarity_page(cka_images="500")
    assert at.title[0].value.startswith("Similarity")
    assert at.multiselect(key="sim_measures").value == ["linear-cka"]
    assert _charts(at) == ["cka_page_grid"]  # the bundled grid of the default pair, before any measure
    # the task-trained one (it was the newest bundled grid, least squares: the opposite picture)
    assert at.selectbox(key="cka_grid").format_func(at.selectbox(key="cka_grid").value).startswith("Paper recipe")
    at.multiselect(key="sim_measures").set_value(["rbf-cka", "linear-cka"]).run()
    assert any("Not stored for 500 test images yet: RBF CKA, Linear CKA" in i.value for i in at.info)
    for _ in range(2):
        next(b for b in at.button if b.label == "Compute").click().run()
        _no_trouble(at)
    (job,) = jobs.list_jobs(Store(app_db), active_only=True)
    assert job["kind"] == "similarity" and [c["measures"] for c in job["params"]["configs"]] == [["rbf-cka"],
                                                                                                ["linear-cka"]]
    runs.serve(app_db, poll=0.01, idle_exit=0.05)  # the worker's part, in this process
    at.run()
    _no_trouble(at)
    assert _charts(at)[:3] == ["cka_page_grid", "sim_rbf-cka", "sim_linear-cka"]  # the grid, then each measure
    assert {"sim_scatter_rbf-cka", "sim_scatter_linear-cka"} <= set(_charts(at))
    assert not [b for b in at.button if b.label == "Compute"]  # everything shown is stored
    ranking = at.dataframe[0].value
    assert sorted(ranking["measure"]) == ["Linear CKA", "RBF CKA"] and list(ranking["rank by ρ"]) == [1, 2]
    assert set(ranking["cells"]) == {45} and all(ranking["concordant"] + ranking["discordant"] + ranking["tied"]
                                                 == 45 * 44 // 2)
    assert ranking["Spearman ρ"].is_monotonic_decreasing
    assert any("(990 pairs of cells" in c.value for c in at.caption)
    for table, label in zip(at.dataframe[1:], ["RBF CKA", "Linear CKA"]):  # one disagreement table per measure
        assert list(table.value.columns) == ["cell", label, "accuracy", "reading"] and len(table.value) == 5
    figure = json.loads(next(c for c in at.get("plotly_chart") if c.key == "sim_rbf-cka").proto.spec)
    assert figure["layout"]["title"]["text"] == "RBF CKA"
    # The Runs page draws a stored similarity run (it showed only its summary as JSON).
    (rbf,) = [r for r in Store(app_db).list_runs(kind="similarity") if r["config"]["measures"] == ["rbf-cka"]]
    at.switch_page("pages/runs.py")
    at.query_params.update({"run": rbf["id"]})
    at.run()
    _no_trouble(at)
    assert [c.key for c in at.get("plotly_chart")] == ["sim_rbf-cka"]
    assert [b.proto.label for b in at.get("download_button")] == ["Export CSV", "Export JSON"]


def test_an_old_cka_link_opens_on_its_kernel(app_db):
    at = _similarity_page(cka_kernel="rbf", cka_images="10000")  # (refused: nothing computes)
    assert at.multiselect(key="sim_measures").value == ["rbf-cka"]


def test_an_image_count_whose_features_would_not_fit_is_refused_in_one_line(app_db):
    at = _similarity_page(cka_images="10000")
    (warning,) = at.warning
    assert warning.value == ("10,000 images of these layers need 4.7 GiB of features held at once, more than the "
                             "4.0 GiB budget; use at most 8,594 images, or fewer layers.")
    assert not [b for b in at.button if b.label == "Compute"] and not jobs.list_jobs(Store(app_db))


def test_no_measure_picked_says_so(app_db):
    at = _similarity_page()
    at.multiselect(key="sim_measures").set_value([]).run()
    _no_trouble(at)
    assert [i.value for i in at.info] == ["Pick at least one similarity measure."]


def test_a_distance_is_drawn_on_a_reversed_scale_and_says_so():
    from plotly.colors import sequential

    from ui import charts

    def result(matrix, higher_is_similar):
        return {"model_a": "a", "model_b": "b", "layers_a": ["s0", "s1"], "layers_b": ["r0", "r1"], "measures": {
            "m": {"label": "M", "higher_is_similar": higher_is_similar, "summary": "", "matrix": matrix}}}

    distance = charts.measure_heatmap(result([[0.1, 2.0], [0.5, 1.0]], False), "m", width=402)
    cells = distance.data[0].marker
    assert cells.colorscale[0][1] == sequential.Viridis[-1]  # the smallest distance is the brightest
    assert cells.colorbar.title.text.replace("<br>", " ") == "M: a distance, lower = more similar (scale reversed)"
    assert (cells.cmin, cells.cmax) == (0.1, 2.0)  # beyond [0, 1]: its own range
    similarity = charts.measure_heatmap(result([[0.1, 0.9], [0.5, 0.7]], True), "m", width=402).data[0].marker
    assert similarity.colorscale[0][1] == sequential.Viridis[0] and (similarity.cmin, similarity.cmax) == (0, 1)
