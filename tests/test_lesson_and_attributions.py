"""The Lesson says what its data shows (numbers computed, never typed), draws the relative-depth
diagonal and reruns its own grids; the Attributions page refuses a dataset the networks were not
trained on in one line, says why scoring failed, and labels and preselects its grids in words."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.engine.results import region_means
from core.runs import jobs, recipes
from core.runs import lesson as lesson_data
from core.runs.store import Store
from ui import attributions as attr
from ui import lesson_text as say
from ui.analysis import agreement
from ui.state import dataset_mismatch

APP = str(Path(__file__).resolve().parent.parent / "app.py")
STEP = {n: s for n, s in enumerate(["1 · The question", "2 · Same architecture, two seeds", "3 · Later into earlier",
                                    "4 · Random controls", "5 · What CKA says",
                                    "6 · Imitating is not the same as working"], start=1)}
PAIR = ("zoo/resnet_1111-s0", "zoo/resnet_2222-s0")


@pytest.fixture(scope="module")
def material():
    found = lesson_data.read_lesson()
    assert found is not None, "assets/lesson/lesson.json is missing"
    return found


def _page(path: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(path)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _lesson(step: int, material_path: Path | None = None, monkeypatch=None) -> AppTest:
    if material_path is not None:
        monkeypatch.setattr(lesson_data, "LESSON_FILE", material_path)
    return _page("pages/lesson.py", step=STEP[step])


def _text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [i.value for i in at.info])


def _altered(material: dict, tmp_path: Path, change) -> Path:
    changed = copy.deepcopy(material)
    change(changed["grids"])
    path = tmp_path / "lesson.json"
    path.write_text(json.dumps(changed))
    return path


def _set_region(grid: dict, region: str, value: float) -> None:
    for i, j, _, where in say.cells(grid):
        if where == region:
            grid["accuracy"][grid["sender_layers"].index(i)][grid["receiver_layers"].index(j)] = value


# -- the Lesson: what each step says ----------------------------------------------------------------

def test_every_step_states_the_chance_level(app_db, material):
    chance = say.fmt(say.chance(material["grids"]["deeper"]))
    assert chance == "0.10"  # ten balanced classes
    for step in STEP:
        text = _text(_lesson(step))
        assert re.search(rf"guessing[^.]*{re.escape(chance)}", text), f"step {step} does not state chance: {text}"


def test_step_2_says_what_the_picture_shows_not_that_the_diagonal_works(app_db, material):
    seeds = material["grids"]["seeds"]
    text = _text(_lesson(2))
    assert "diagonal (same layer into same layer) works" not in text
    assert "The best stitches come from a deeper sender layer" in text
    low = min(say.diagonal(seeds), key=lambda c: c[2])
    assert f"{low[0]} → {low[1]} reaches only **{say.fmt(low[2])}**" in text  # stem → stem 0.66
    for mean in region_means(seeds["accuracy"]).values():
        assert f"**{say.fmt(mean)}**" in text


def test_step_2_follows_the_data_when_the_diagonal_is_best(material):
    seeds = copy.deepcopy(material["grids"]["seeds"])
    _set_region(seeds, "diagonal", 0.95)
    text = say.seeds_text(seeds)
    assert "The best stitches come from a deeper sender layer" not in text
    assert "highest on it (as deep): **0.95**" in text


def test_the_sanity_check_is_read_from_the_seeds_grid(material):
    seeds = material["grids"]["seeds"]
    note = say.sanity_note(seeds)
    stem = say.value(seeds, "stem", "stem")
    assert f"stem → stem reaches **{say.fmt(stem)}** against **{say.fmt(say.receiver_alone(seeds))}**" in note
    assert "not a proof" in note
    passing = copy.deepcopy(seeds)
    _set_region(passing, "diagonal", say.receiver_alone(seeds) - 0.01)
    assert say.sanity_note(passing).startswith("Sanity check passed")


def test_step_3_draws_the_relative_depth_diagonal(app_db, material):
    deeper = material["grids"]["deeper"]
    (chart,) = _lesson(3).get("plotly_chart")
    shapes = json.loads(chart.proto.spec)["layout"].get("shapes", [])
    lines = [s for s in shapes if s.get("type") == "line"]
    assert len(lines) == 1, shapes
    line = lines[0]
    # From stem → stem to the last sender layer → the last receiver layer, in category indices (5 × 9).
    assert (line["x0"], line["y0"]) == (0, 0)
    assert (line["x1"], line["y1"]) == (len(deeper["receiver_layers"]) - 1, len(deeper["sender_layers"]) - 1)


def test_step_3_never_says_the_reverse_fails_where_it_works(app_db, material):
    deeper = material["grids"]["deeper"]
    means = region_means(deeper["accuracy"])
    text = _text(_lesson(3))
    assert "the reverse does not" not in text
    assert f"**{say.fmt(means['upper_right'])}**" in text and f"**{say.fmt(means['lower_left'])}**" in text
    assert "the reverse works too" in text


def test_step_3_follows_the_data_when_the_reverse_is_better(material):
    deeper = copy.deepcopy(material["grids"]["deeper"])
    _set_region(deeper, "upper_right", 0.97)
    text = say.deeper_text(deeper)
    assert "Unlike the seed paper" in text and "the reverse works too" not in text


def test_step_3_explains_its_outlier_with_the_least_squares_cell(app_db, material):
    deeper, lstsq = material["grids"]["deeper"], material["grids"]["deeper_lstsq"]
    text = _text(_lesson(3))
    low = say.value(deeper, "stem", "layer1.1")
    assert f"stem → layer1.1 at **{say.fmt(low)}**" in text
    assert f"reaches {say.fmt(say.value(lstsq, 'stem', 'layer1.1'))} (step 6)" in text
    rest = [v for i, j, v, where in say.cells(deeper) if where == "upper_right" and (i, j) != ("stem", "layer1.1")]
    assert f"Without it the mean above the diagonal is {say.fmt(sum(rest) / len(rest))}" in text


def test_no_outlier_no_sentence(material):
    deeper = copy.deepcopy(material["grids"]["deeper"])
    deeper["accuracy"][0][2] = 0.88  # stem → layer1.1 like its neighbours
    assert say.outlier_text(deeper, material["grids"]["deeper_lstsq"]) == ""


def test_step_4_says_the_stitch_is_trained_and_reads_the_four_means(app_db, material):
    text = _text(_lesson(4))
    assert "the stitch trained the same way" in text and "random weights, never trained" in text
    for key in ("deeper", "deeper_random_sender", "deeper_random_receiver", "deeper_random_both"):
        values = [v for row in material["grids"][key]["accuracy"] for v in row if v is not None]
        assert f"**{sum(values) / len(values):.2f}**" in text, key


def test_step_5_explains_a_marked_point_and_its_colour(app_db, material):
    deeper = material["grids"]["deeper"]
    points, _ = agreement(material["cka"], deeper)
    point = say.example_point(points)
    text = _text(_lesson(5))
    assert f"the marked dot is {point['cell']}: CKA **{say.fmt(point['cka'])}**" in text
    assert f"it is {'blue' if point['depth_gap'] > 0 else 'red'} because" in text
    scatter = json.loads(_lesson(5).get("plotly_chart")[1].proto.spec)
    assert [a["text"] for a in scatter["layout"]["annotations"]] == [point["cell"]]


def test_colour_words_match_the_scatters_scale():
    assert (say.colour_word(0.4), say.colour_word(-0.4), say.colour_word(0.0)) == ("blue", "red", "white")


def test_step_6_shows_its_grid_beside_step_3s(app_db, material):
    at = _lesson(6)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 2
    lstsq, deeper = material["grids"]["deeper_lstsq"], material["grids"]["deeper"]
    text = _text(at)
    assert say.recipe_caption(deeper) in text and say.recipe_caption(lstsq) in text
    ls, tr = region_means(lstsq["accuracy"]), region_means(deeper["accuracy"])
    assert f"below it **{say.fmt(ls['lower_left'])}** (task-trained: **{say.fmt(tr['lower_left'])}**)" in text


@pytest.mark.parametrize(("button", "budget"), [("Run this grid yourself", "full"),
                                                ("Run a CPU-sized version", "quick")])
def test_step_6_reruns_its_own_grid(app_db, material, button, budget):
    """The link used to open step 3's grid (Paper recipe, every image: hours on a CPU) under a
    hint that promised seconds."""
    at = _lesson(6)
    text = _text(at)
    seconds = material["grids"]["deeper_lstsq"]["seconds"]
    assert f"{seconds:.0f} s on the {material['made_with']['device']}" in text
    assert "several minutes on a two-core CPU" in text and "10–17 s on a two-core CPU" in text
    next(b for b in at.button if b.label == button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Model stitching"
    assert at.radio(key="recipe").value == recipes.RECIPES["instant"].label
    assert at.radio(key="budget").value == recipes.BUDGETS[budget].label


def test_the_lesson_text_follows_a_rebuilt_lesson(app_db, material, tmp_path, monkeypatch):
    """Halve every accuracy in the asset: every accuracy the text quotes must follow (chance stays
    0.10), so no step can contradict its grids. Step 5 also quotes CKA values, which stay."""
    def halve(grids):
        for grid in grids.values():
            grid["accuracy"] = [[None if v is None else round(v * 0.5, 4) for v in row] for row in grid["accuracy"]]
            for key in ("sender_accuracy", "receiver_accuracy", "reference_accuracy"):
                grid[key] = round(grid[key] * 0.5, 4)

    path = _altered(material, tmp_path, halve)
    for step in (1, 2, 3, 4, 6):
        text = _text(_lesson(step, path, monkeypatch))
        quoted = [float(x) for x in re.findall(r"(?<![\d.])0\.\d\d(?!\d)", text)]
        assert quoted and max(quoted) <= 0.5, f"step {step} quotes {quoted}: {text}"
        assert not re.search(r"\d %", text), f"step {step} quotes a typed-in percentage: {text}"
    changed = json.loads(path.read_text())["grids"]
    text = _text(_lesson(3, path, monkeypatch))
    for mean in region_means(changed["deeper"]["accuracy"]).values():
        assert f"**{say.fmt(mean)}**" in text


def test_layer_names_are_explained_once(app_db, material):
    texts = {step: _text(_lesson(step)) for step in STEP}
    assert [step for step, text in texts.items() if "**Layer names.**" in text] == [2]
    assert "`stem`: the first convolution" in texts[2] and "128 channels of 4 × 4 after `layer4.1`" in texts[2]


# -- the Attributions page --------------------------------------------------------------------------

def test_attributions_refuses_a_dataset_the_networks_were_not_trained_on(app_db):
    at = _page("pages/attributions.py", dataset="cifar10")
    assert len(at.error) == 1, [e.value for e in at.error]
    message = at.error[0].value
    assert "trained on Fashion-MNIST, not CIFAR-10" in message and "pick fashion-mnist" in message
    assert "\n" not in message and "Traceback" not in message
    assert not jobs.list_jobs(Store(app_db)), "work was queued for networks that cannot read these images"


def test_the_mismatch_check_passes_a_matching_dataset():
    assert dataset_mismatch(*PAIR, "fashion-mnist") is None
    assert dataset_mismatch(PAIR[0], PAIR[0], "cifar10").startswith(f"{PAIR[0]} was trained on")


def test_a_failed_scoring_is_said_in_one_line_and_not_as_still_running(app_db, monkeypatch):
    import core.data.datasets

    def missing(*args, **kwargs):
        raise FileNotFoundError("Fashion-MNIST not found: install dataset-fashion-mnist")

    at = _page("pages/attributions.py")
    assert any("Scoring the receiver" in i.value for i in at.info)
    monkeypatch.setattr(core.data.datasets, "load_dataset", missing)
    from core import runs

    runs.serve(app_db, poll=0.01, idle_exit=0.05)  # the worker, here: the job fails
    for _ in range(2):  # the run that sees the failure, and every later one
        at.run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        assert errors[0] == ("The receiver could not be scored on the test set: Fashion-MNIST not found: install "
                             "dataset-fashion-mnist")
        assert not any("Scoring the receiver" in i.value for i in at.info)


def _grid_run(store: Store, control: str = "none", recipe: str = "paper", budget: str = "full") -> str:
    config = recipes.grid_config(*PAIR, recipe, budget, control=control)
    run_id = store.create_run("grid", config)
    store.put_cell(run_id, "layer4.0", "layer1.0", "done", 0.9)
    store.update_run(run_id, status="done")
    return run_id


def test_attributions_preselects_the_newest_real_grid_and_labels_grids_in_words(app_db):
    store = Store(app_db)
    real = _grid_run(store, recipe="instant", budget="quick")
    control = _grid_run(store, control="random-sender")  # newer, but a control
    at = _page("pages/attributions.py")
    picker = at.selectbox(key="attr_run")
    assert picker.value == real
    labels = picker.options
    assert len(labels) == 2 and not any(real in label or control in label for label in labels)
    assert labels[0].startswith(f"{recipes.RECIPES['paper'].label} · random sender · every image · ")
    assert labels[1].startswith(f"{recipes.RECIPES['instant'].label} · real networks · 2,000 training / 1,000 test "
                                "images · ")
    assert re.search(r" · \d{4}-\d\d-\d\d \d\d:\d\d$", labels[1])


def test_bundled_grids_are_not_offered_for_attributions(app_db):
    """The bundled grids (the lesson's, stored at start) hold accuracies but no stitch to explain."""
    from core.runs import bundled

    bundled.install(Store(app_db))  # what the app does when it opens a store; once per identity
    assert any(bundled.provenance(r) for r in Store(app_db).list_runs(kind="grid"))
    at = _page("pages/attributions.py")
    assert not at.get("selectbox") or "attr_run" not in [s.key for s in at.selectbox]
    assert any("No stitching grid stored for this pair" in i.value for i in at.info)


def test_a_link_to_a_grid_still_opens_that_grid():
    grids = [{"id": "a", "config": {"control": "random-both"}}, {"id": "b", "config": {"control": "none"}}]
    assert attr.preselected(grids, None) == 1
    assert attr.preselected(grids, "a") == 0
    assert attr.preselected(grids[:1], None) == 0  # only controls: the newest


def test_cifar10_offline_says_why_in_words(monkeypatch):
    import socket
    import urllib.error

    import torchvision

    from core.data.datasets import load_dataset

    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("cifar10", "test")
    assert "Name or service not known" in str(caught.value) and "<urlopen" not in str(caught.value)
