"""Issue 19, items 2 and 8: what a link or a command line can make StitchLab do.

Item 2: nothing a URL names is loaded by a page, a model over the parameter budget is refused
before it is built, and a network that predicts more classes than the dataset has is one line.
Item 8: the command line refuses in one line, before the work, what would end in a traceback or
lose the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile import OTHER_SMALL_MODEL, SMALL_MODEL, image_folder, run_cli, small_datasets

GRID = ["grid", SMALL_MODEL, OTHER_SMALL_MODEL, "--mode", "lstsq", "--sender-layers", "stem", "--receiver-layers",
        "layer4.0", "--device", "cpu", "--quiet"]
CKA = ["cka", SMALL_MODEL, OTHER_SMALL_MODEL, "--layers-a", "stem", "--layers-b", "layer4.0", "--limit", "16",
       "--batch-size", "8", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _small_data():
    with small_datasets():
        yield


def _refused(outcome, *words):
    """Exit 2, one ``error:`` line holding every one of ``words``, no traceback."""
    assert outcome.exception is None, outcome.describe()
    assert outcome.code == 2 and outcome.clean, outcome.describe()
    for word in words:
        assert word in outcome.messages[0], outcome.messages[0]
    return outcome.messages[0]


def _no_work(monkeypatch, target: str):
    """Make ``target`` (module.function) fail loudly if the command gets as far as calling it."""
    module, name = target.rsplit(".", 1)

    def work(*args, **kwargs):
        raise AssertionError(f"{target} was called: the work started before the input was checked")

    monkeypatch.setattr(f"{module}.{name}", work)


# --- item 8: --device ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [GRID + ["--json", "-"], CKA + ["--json", "-"],
                                  ["attribute", SMALL_MODEL, "--png", "attr.png"]], ids=["grid", "cka", "attribute"])
@pytest.mark.parametrize("device", ["tpu", "cuda:x", ""])
def test_an_unknown_device_is_one_line_naming_the_choices(argv, device, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _refused(run_cli(argv + ["--device", device]), f"unknown device {device!r}", "auto, cpu, cuda")
    assert "Expected one of" not in message  # torch's list of twenty device types


# --- item 8: decompression bombs in a folder: dataset ---------------------------------------------
@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000)], ids=["over-twice-PIL-limit", "over-PIL-limit"])
def test_a_decompression_bomb_in_an_image_folder_is_one_line_naming_the_file(size, tmp_path, monkeypatch):
    from PIL import ImageFile

    decoded = []
    original = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    folder = image_folder(tmp_path / "images", bomb=size)
    message = _refused(run_cli(CKA + ["--dataset", f"folder:{folder}", "--json", "-"]),
                       str(folder / "shoe" / "bomb.png"), "pixels")
    assert "bomb.png" in message and size not in decoded  # refused from its header, never decoded


def test_an_unreadable_image_in_a_folder_is_one_line_naming_the_file(tmp_path):
    folder = image_folder(tmp_path / "images")
    (folder / "shirt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image at all")
    _refused(run_cli(CKA + ["--dataset", f"folder:{folder}", "--json", "-"]), str(folder / "shirt" / "broken.png"))


def test_a_folder_linking_to_itself_is_read_once(tmp_path):
    """torchvision's ImageFolder follows links inside a class folder: a link to a parent folder
    walks it again and again. The folder is read as if the link were not there."""
    from core.data.datasets import load_dataset

    folder = image_folder(tmp_path / "images")
    (folder / "shirt" / "loop").symlink_to(folder, target_is_directory=True)
    assert len(load_dataset(f"folder:{folder}", "test")) == 4


# --- item 8: --json (and --png) checked before the work --------------------------------------------
@pytest.mark.parametrize("argv, work", [
    (GRID + ["--json", "{out}"], "core.engine.grid.run_grid"),
    (CKA + ["--json", "{out}"], "core.similarity.networks.model_cka"),
    (["sweep", "--models", SMALL_MODEL, "--name", "s", "--device", "cpu", "--quiet", "--json", "{out}"],
     "core.runs.sweep.run_sweep"),
    (["layers", SMALL_MODEL, "--json", "{out}"], "core.models.network.load_model"),
    (["attribute", SMALL_MODEL, "--png", "ok.png", "--json", "{out}"], "core.models.network.load_model"),
    (["attribute", SMALL_MODEL, "--png", "{out}"], "core.models.network.load_model"),
], ids=["grid", "cka", "sweep", "layers", "attribute-json", "attribute-png"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(argv, work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "store.sqlite3"))
    (tmp_path / "plain-file").write_text("a file, not a folder\n")
    out = str(tmp_path / "plain-file" / "result.json")
    _no_work(monkeypatch, work)
    message = _refused(run_cli([arg.replace("{out}", out) for arg in argv]), out, "cannot write")
    assert "writable path" in message


def test_a_result_that_cannot_be_written_after_the_work_is_printed_instead(tmp_path, monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (a file every write to fails: the disk filled up during the work)")
    monkeypatch.chdir(tmp_path)
    outcome = run_cli(GRID + ["--json", "/dev/full"])
    _refused(outcome, "could not write", "printed to stdout instead")
    assert json.loads(outcome.stdout)["sender"] == SMALL_MODEL  # the grid is not lost


def test_an_output_check_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch, "core.engine.grid.run_grid")
    outcome = run_cli(GRID + ["--json", str(tmp_path / "new" / "deeper" / "result.json")])
    assert isinstance(outcome.exception, AssertionError)  # the check passed; the work was next
    assert not (tmp_path / "new").exists()


# --db: a store that cannot be made is refused before the work -----------------------------------------
_STORE_COMMANDS = {
    "grid": (GRID + ["--json", "-"], "core.engine.grid.run_grid"),
    "similarity": (["similarity", SMALL_MODEL, OTHER_SMALL_MODEL, "--measure", "linear-cka", "--limit", "16",
                    "--device", "cpu", "--quiet", "--json", "-"], "core.runs.similarity_runs.run_similarity"),
    "sweep": (["sweep", "--models", SMALL_MODEL, "--name", "s", "--device", "cpu", "--quiet"],
              "core.runs.sweep.run_sweep"),
    "runs": (["runs"], "core.runs.store.Store"),
    "worker": (["worker", "--idle-exit", "1"], "core.runs.service.serve"),
}


@pytest.mark.parametrize("command", list(_STORE_COMMANDS))
def test_a_store_name_too_long_for_the_filesystem_is_one_line_naming_db(command, tmp_path, monkeypatch):
    """It was the file system's words alone ('[Errno 36] File name too long: ...'), naming no option."""
    argv, work = _STORE_COMMANDS[command]
    _no_work(monkeypatch, work)
    _no_work(monkeypatch, "core.runs.store.Store")
    store = str(tmp_path / ("s" * 300 + ".sqlite3"))
    _refused(run_cli(argv + ["--db", store]), "cannot write --db", "File name too long", "choose a shorter path")


def test_an_output_name_too_long_for_the_filesystem_is_one_line_naming_the_flag(tmp_path):
    """Looking the path up raised before the probe could put it in words."""
    _refused(run_cli(["models", "--json", str(tmp_path / ("j" * 300 + ".json"))]), "cannot write --json",
             "File name too long", "choose a shorter path")


@pytest.mark.parametrize("store, words", [("plain-file/store.sqlite3", "Not a directory"), (".", "is a folder")],
                         ids=["under-a-file", "a-folder"])
def test_a_store_that_cannot_be_made_is_refused_before_the_work(store, words, tmp_path, monkeypatch):
    (tmp_path / "plain-file").write_text("a file, not a folder\n")
    _no_work(monkeypatch, "core.engine.grid.run_grid")
    _refused(run_cli(GRID + ["--json", "-", "--db", str(tmp_path / store)]), "--db", words)


def test_a_store_check_leaves_nothing_behind(tmp_path, monkeypatch):
    _no_work(monkeypatch, "core.runs.store.Store")
    outcome = run_cli(["runs", "--db", str(tmp_path / "new" / "deeper" / "store.sqlite3")])
    assert isinstance(outcome.exception, AssertionError)  # the check passed; opening the store was next
    assert not (tmp_path / "new").exists()


# --out of zoo train (a folder) and lesson build (a file): checked before the hours of work ------------------
@pytest.mark.parametrize("argv, work, shown", [
    (["zoo", "train", "--epochs", "1", "--out", "{out}"], "core.models.zoo_train.train_zoo", "{out}/manifest.json"),
    (["lesson", "build", "--out", "{out}"], "core.runs.lesson.build_lesson", "{out}"),
], ids=["zoo-train", "lesson-build"])
def test_an_out_that_cannot_be_written_is_refused_before_the_work(argv, work, shown, tmp_path, monkeypatch):
    (tmp_path / "plain-file").write_text("a file, not a folder\n")
    out = str(tmp_path / "plain-file" / "zoo")
    _no_work(monkeypatch, work)
    shown = shown.replace("{out}", out)
    _refused(run_cli([arg.replace("{out}", out) for arg in argv]), f"cannot write --out {shown!r}", "Not a directory",
             "choose a")


@pytest.mark.parametrize("argv, work", [
    (["zoo", "train", "--epochs", "1", "--out", "{out}"], "core.models.zoo_train.train_zoo"),
    (["lesson", "build", "--out", "{out}/lesson.json"], "core.runs.lesson.build_lesson"),
], ids=["zoo-train", "lesson-build"])
def test_an_out_check_leaves_nothing_behind(argv, work, tmp_path, monkeypatch):
    _no_work(monkeypatch, work)
    outcome = run_cli([arg.replace("{out}", str(tmp_path / "new" / "deeper")) for arg in argv])
    assert isinstance(outcome.exception, AssertionError)  # the check passed; the work was next
    assert not (tmp_path / "new").exists()


# --- item 8: runs --kind --------------------------------------------------------------------------
def test_runs_of_an_unknown_kind_is_one_line_listing_the_kinds(tmp_path):
    message = _refused(run_cli(["runs", "--db", str(tmp_path / "store.sqlite3"), "--kind", "bogus"]),
                       "unknown run kind 'bogus'")
    assert all(kind in message for kind in ("grid", "cka", "sweep"))
    assert run_cli(["runs", "--db", str(tmp_path / "store.sqlite3"), "--kind", "grid"]).code == 0


# --- what the property test (tests/test_cli_properties.py) found ------------------------------------
@pytest.mark.parametrize("flag, value, words", [
    ("--epochs", "1e308", ["epochs must be at most"]),  # finite, so accepted: a training loop that never ends
    ("--lr", "1e308", ["lr must be at most"]),  # past float32's range: a RuntimeError from the optimizer
])
def test_grid_settings_too_large_to_run_are_one_line(flag, value, words, monkeypatch):
    _no_work(monkeypatch, "core.engine.grid.run_grid")
    _refused(run_cli(GRID + ["--mode", "train", flag, value, "--json", "-"]), *words)


def test_an_rbf_bandwidth_too_large_to_square_is_one_line():
    _refused(run_cli(CKA + ["--kernel", "rbf", "--sigma", "1e308", "--json", "-"]), "sigma", "0.001 to 1000")


@pytest.mark.parametrize("flag", ["--seed", "--target"])
def test_a_seed_or_class_past_64_bits_is_one_line_naming_the_flag(flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _refused(run_cli(["attribute", SMALL_MODEL, "--method", "gradientshap", "--png", "a.png", flag,
                                str(10**30)]), flag, "too large")
    assert "long long" not in message and "numpy" not in message


def test_the_seed_of_a_random_copy_past_64_bits_is_one_line():
    message = _refused(run_cli(["layers", f"{SMALL_MODEL}@random:{10**30}"]), "@random:SEED", "too large")
    assert "Overflow" not in message


# --- item 2: the parameter budget -------------------------------------------------------------------
@pytest.mark.parametrize("name, budget, count", [("torchvision/resnet18@random", 1_000_000, "11.7 M"),
                                                 ("zoo/mobilenet_v2-s0@random:3", 500_000, "0.7 M")])
def test_a_model_over_the_parameter_budget_is_refused_before_it_is_built(name, budget, count, monkeypatch):
    monkeypatch.setenv("STITCHLAB_MAX_MODEL_PARAMS", str(budget))
    _no_work(monkeypatch, "core.models.network._seeded_build")
    message = _refused(run_cli(["layers", name]), name, count, "STITCHLAB_MAX_MODEL_PARAMS")
    assert "budget" in message


def test_the_default_budget_admits_every_torchvision_classifier_and_the_zoo(monkeypatch):
    import torchvision

    from core.models import sources, zoo

    monkeypatch.delenv("STITCHLAB_MAX_MODEL_PARAMS", raising=False)
    names = [f"torchvision/{arch}" for arch in torchvision.models.list_models(module=torchvision.models)]
    names += [f"zoo/{name}" for name in zoo.zoo_names()]
    counts = {name: sources.parameter_count(name) for name in names}
    assert all(counts.values()) and max(counts.values()) <= sources.max_model_params()
    for name in names:
        sources.check_budget(name)


@pytest.mark.parametrize("value", ["lots", "nan", "-5", "0", "inf"])
def test_a_bad_budget_setting_is_one_line(value, monkeypatch):
    monkeypatch.setenv("STITCHLAB_MAX_MODEL_PARAMS", value)
    _refused(run_cli(["layers", SMALL_MODEL]), "STITCHLAB_MAX_MODEL_PARAMS", "whole number")


# --- item 2: a network with more classes than the dataset has ----------------------------------------
def test_scoring_a_network_with_more_classes_than_the_dataset_is_one_line(store, monkeypatch):
    """A 1,000-class network on Fashion-MNIST's 10: its answers (up to 999) have no class name,
    and the Attributions page indexed the ten names with them (IndexError)."""
    import torch

    from core.models import network
    from core.runs import analysis

    class ImageNetSized:  # answers like an ImageNet classifier, at no cost
        name, num_classes = SMALL_MODEL, 1000

        def __call__(self, images):
            return torch.arange(1000.0).expand(len(images), -1)  # always class 999

    monkeypatch.setattr(network, "cached_model", lambda name, device="cpu": ImageNetSized())
    with pytest.raises(ValueError, match="predicts 1000 classes but fashion-mnist has 10"):
        analysis.run_predictions(analysis.predictions_config(SMALL_MODEL), store, device="cpu")


# --- item 2: every page with a hostile link ---------------------------------------------------------
HOSTILE_LINK = {
    "sender": "torchvision/vit_l_16@random:1", "receiver": f"{SMALL_MODEL}@random:{10**30}",
    "dataset": "folder:/etc", "device": "tpu", "run": "../../etc/passwd", "attr_pos": "99999999",
    "attr_class": "nope", "attr_which": "nope", "attr_method": "bogus", "attr_true": "maybe", "cell_i": "layer9",
    "cell_j": "x" * 300, "s_layers": "layer9", "r_layers": "\x01", "recipe": "bogus", "budget": "bogus",
    "metric": "nan", "controls": "bogus", "cka_kernel": "bogus", "models_model": "file:/etc/passwd", "sweep": "../x",
    "step": "-1", "runs_kind": "bogus", "runs_status": "bogus", "runs_text": "\x1b[31m",
}
PAGES = ["pages/stitching.py", "pages/cka.py", "pages/attributions.py", "pages/models.py", "pages/runs.py",
         "pages/sweeps.py", "pages/lesson.py"]


@pytest.mark.parametrize("link", [HOSTILE_LINK, {"receiver": "torchvision/resnet18@random"},
                                  {"receiver": f"{SMALL_MODEL}@random:-{10**30}"}], ids=["everything", "issue", "seed"])
def test_a_link_makes_no_page_load_a_model_or_queue_one_it_does_not_offer(link, app_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.models import catalog, sources
    from core.runs import jobs
    from core.runs.store import Store

    for loader in ("load_model", "cached_model"):  # the page process never loads a network
        _no_work(monkeypatch, f"core.models.network.{loader}")
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    for page in PAGES:
        at = AppTest.from_file(app, default_timeout=120)
        at.query_params.update(link)
        at.run()
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
    offered = set(catalog.model_names())
    for job in jobs.list_jobs(Store(app_db)):
        for config in job["params"]["configs"]:
            for key in ("model", "sender", "receiver", "model_a", "model_b"):
                if config.get(key) is not None:  # an offered network, or a random copy torch can seed
                    model = sources.parse(config[key])
                    assert model.base in offered and abs(model.seed or 0) < 2**63, (job["kind"], key, config[key])


def test_a_vision_transformer_is_fed_the_image_size_it_was_built_for(monkeypatch):
    """``layers torchvision/vit_h_14@random`` was a traceback (found by bench/adversarial_probes.py):
    the network was fed its default weights' crop size (518), but torchvision builds it for 224.
    vit_b_16 stands in for it (the same rule at a seventh of the size), its crop size made 518."""
    from core.models import network

    monkeypatch.setattr(network, "_torchvision_input_size", lambda arch: 518)
    outcome = run_cli(["layers", "torchvision/vit_b_16@random", "--json", "-"])
    assert outcome.code == 0, outcome.describe()
    assert json.loads(outcome.stdout)[-1]["shape"] == [197, 768]  # 14 x 14 patches of a 224 image, and the class token


def test_a_name_holding_a_newline_or_an_ansi_escape_is_shown_not_obeyed(tmp_path, monkeypatch):
    """Found by the property test: a model name with a newline broke the progress line in two,
    and an ANSI escape in it reached the terminal raw."""
    monkeypatch.chdir(tmp_path)
    name = "\x1b[31m\n0"
    outcome = run_cli(["grid", SMALL_MODEL, name, "--device", "cpu", "--json", "-"])  # not --quiet: a progress line
    _refused(outcome, "unknown model")
    assert "\x1b" not in outcome.stderr and "\\x1b[31m\\n0" in outcome.stderr
