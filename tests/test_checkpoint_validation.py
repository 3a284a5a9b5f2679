"""Checkpoints whose metadata or weights lie (issue 19, items 3, 4 and 7): every forged file is
refused in one line naming the bad key or tensor, before a network of the claimed size is built,
through every door (reading, ``file:`` names, the CLI, uploads, the paper zoo)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from core import cli
from core.models import architectures, zoo
from core.models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from core.models.network import load_model


def _zoo_state(key: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(zoo.manifest_path().parent / zoo.zoo_entry(key)["file"])[0]


def _zoo_metadata(key: str) -> dict:
    entry = zoo.zoo_entry(key)
    return {k: entry[k] for k in ("config", "dataset", "input_shape", "mean", "std")}


def _forge(path, metadata, tensors=None):
    """A safetensors file whose StitchLab metadata is ``metadata`` (a str is written as it is:
    safetensors metadata is str -> str, and save_checkpoint writes ours as JSON)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(tensors if tensors is not None else {"x": torch.zeros(1)}, str(path), metadata={"stitchlab": text})
    return path


def _one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message and "object at" not in message, message
    return message


# --- item 3: a config's size is held to the file's tensors before anything is built ---------------

@pytest.fixture
def real_builds(monkeypatch):
    """The devices every ResNet was built on: 'meta' (shapes only) is free, 'cpu' allocates."""
    devices = []
    build = architectures.ARCHITECTURES["resnet"]

    def spy(config):
        devices.append(torch.empty(0).device.type)  # the default device: meta inside torch.device("meta")
        return build(config)

    monkeypatch.setitem(architectures.ARCHITECTURES, "resnet", spy)
    return devices


# Width 256 stands for the 1000 (156 bytes that took 5.4 GB and 10 s to refuse): the same path,
# without a regression costing gigabytes. Width 100000 was a RuntimeError traceback (360 GB asked for).
@pytest.mark.parametrize("width", [256, 100_000])
def test_a_forged_width_is_refused_before_the_network_is_built(tmp_path, real_builds, width):
    forged = _forge(tmp_path / "forged.safetensors", {"config": {"arch": "resnet", "width": width}})
    with pytest.raises(CheckpointError) as caught:
        load_model(f"file:{forged}")
    message = _one_line(str(caught.value))
    assert ("config key 'width'" in message) if width > 4096 else ("does not fit SmallResNet" in message)
    assert "cpu" not in real_builds  # laid out on the meta device only


def test_a_file_whose_tensors_fit_its_config_still_loads(tmp_path, real_builds):
    saved = _forge(tmp_path / "ok.safetensors", _zoo_metadata("resnet_1111-s0"), _zoo_state("resnet_1111-s0"))
    net = load_model(f"file:{saved}")
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert real_builds[0] == "meta" and real_builds.count("cpu") == 1  # laid out, checked, then built once


def test_a_config_too_large_to_build_is_refused_without_a_file(monkeypatch, real_builds):
    # A low limit, so that a regression builds 11 million numbers, not the 23 GB of a real refusal's example.
    monkeypatch.setattr(architectures, "MAX_STATE_NUMBERS", 1_000_000, raising=False)
    with pytest.raises(ValueError, match=r"builds a network of 11,[\d,]+ numbers .* over the limit of 1,000,000"):
        architectures.build_architecture({"arch": "resnet", "blocks": [2, 2, 2, 2], "width": 64})
    assert "cpu" not in real_builds


# (model whose tensors the file holds, change to its metadata, words the one line must hold). Sizes are
# just over their bounds: a regression then builds a network that fits in memory, not one of terabytes.
_BAD_METADATA = [
    ("resnet_1111-s0", '"hello"', "'stitchlab' entry is not a JSON object"),
    ("resnet_1111-s0", "{not json", "'stitchlab' entry is not a JSON object"),
    ("resnet_1111-s0", {"config": "resnet"}, "key 'config' must be an object"),
    ("resnet_1111-s0", {"config": {"blocks": [1, 1, 1, 1]}}, "'arch' key"),
    ("resnet_1111-s0", {"config": {"arch": ["resnet"]}}, "unknown architecture"),
    ("resnet_1111-s0", {"config.width": "16"}, "config key 'width' must be a whole number"),
    ("resnet_1111-s0", {"config.width": True}, "config key 'width' must be a whole number"),
    ("resnet_1111-s0", {"config.width": math.nan}, "config key 'width' must be a whole number"),
    ("resnet_1111-s0", {"config.width": -16}, "config key 'width' must be a whole number"),
    ("resnet_1111-s0", {"config.width": 16.0}, "config key 'width' must be a whole number"),
    ("resnet_1111-s0", {"config.blocks": "1111"}, "config key 'blocks' must be four whole numbers"),
    ("resnet_1111-s0", {"config.blocks": [1, 1, 1]}, "config key 'blocks' must be four whole numbers"),
    ("resnet_1111-s0", {"config.blocks": [65, 1, 1, 1]}, "config key 'blocks' must be four whole numbers"),
    ("resnet_1111-s0", {"config.in_channels": 0}, "config key 'in_channels' must be a whole number"),
    ("resnet_1111-s0", {"config.num_classes": 100_001}, "config key 'num_classes' must be a whole number"),
    ("resnet_1111-s0", {"config.widht": 32}, "config key 'widht' is not a resnet setting"),
    ("vgg_small-s0", {"config.stages": [[32, "x"]]}, "config key 'stages' must be 1 to 16 lists"),
    ("vgg_small-s0", {"config.stages": {"a": 1}}, "config key 'stages' must be 1 to 16 lists"),
    ("mobilenet_v2-s0", {"config.kwargs": "x"}, "config key 'kwargs' must be an object"),
    ("mobilenet_v2-s0", {"config.kwargs": {"width_mult": math.inf}}, "config key 'kwargs.width_mult' must be"),
    ("mobilenet_v2-s0", {"config.kwargs": {"depth": 3}}, "config key 'kwargs.depth' is not a setting"),
    ("mobilenet_v2-s0", {"config.small_input": "yes"}, "config key 'small_input' must be true or false"),
    ("mobilenet_v2-s0", {"config.name": 7}, "config key 'name' must name a torchvision architecture"),
    ("resnet_1111-s0", {"input_shape": [1, 1025, 32]}, "key 'input_shape' must be [channels"),
    ("resnet_1111-s0", {"input_shape": "32"}, "key 'input_shape' must be [channels"),
    ("resnet_1111-s0", {"input_shape": [3, 32, 32]}, "key 'input_shape' says 3 channels but"),
    ("resnet_1111-s0", {"mean": ["a"]}, "key 'mean' must be one finite number per input channel"),
    ("resnet_1111-s0", {"mean": [0.1, 0.2, 0.3]}, "key 'mean' must be one finite number per input channel"),
    ("resnet_1111-s0", {"std": [0]}, "key 'std' must be one finite number per input channel (all above zero)"),
    ("resnet_1111-s0", {"std": [math.nan]}, "key 'std' must be one finite number per input channel"),
    ("resnet_1111-s0", {"dataset": 5}, "key 'dataset' must be a dataset's name"),
]


def _bad_file(tmp_path, key, change):
    """The zoo model ``key``'s tensors under metadata altered by ``change`` ("config.width": the
    config's width; a str: the whole metadata entry, verbatim)."""
    metadata = _zoo_metadata(key)
    if isinstance(change, str):
        metadata = change
    else:
        for field, value in change.items():
            target, _, inner = field.partition(".")
            if inner:
                metadata[target] = {**metadata[target], inner: value}
            else:
                metadata[target] = value
    return _forge(tmp_path / "bad.safetensors", metadata, _zoo_state(key))


@pytest.mark.parametrize("key,change,words", _BAD_METADATA)
def test_malformed_metadata_is_one_line_naming_the_key_when_loaded(tmp_path, key, change, words):
    path = _bad_file(tmp_path, key, change)
    with pytest.raises(CheckpointError) as caught:
        load_model(f"file:{path}")
    assert words in _one_line(str(caught.value))


@pytest.mark.parametrize("key,change,words", _BAD_METADATA)
def test_malformed_metadata_is_one_line_naming_the_key_when_uploaded(tmp_path, uploads_home, key, change, words):
    from core.models.uploads import save_upload

    data = _bad_file(tmp_path, key, change).read_bytes()
    with pytest.raises(CheckpointError) as caught:
        save_upload(data, "bad.safetensors", "bad")
    assert words in _one_line(str(caught.value))
    assert not list((uploads_home / "uploads").glob("*.safetensors"))


def test_picking_an_architecture_replaces_a_forged_config(tmp_path, uploads_home):
    from core.models.uploads import save_upload

    data = _bad_file(tmp_path, "resnet_1111-s0", {"config.width": 100_000}).read_bytes()
    assert save_upload(data, "bad.safetensors", "fixed", like="zoo/resnet_1111-s0").endswith("/fixed.safetensors")


@pytest.mark.parametrize("metadata,words", [
    ({"config": {"arch": "resnet", "width": 100_000}}, "config key 'width' must be a whole number"),
    ({"config": {"arch": "resnet", "width": "16"}}, "config key 'width' must be a whole number"),
    ('"hello"', "'stitchlab' entry is not a JSON object"),
    ({"config": {"arch": "resnet"}, "input_shape": [1, 32, 32], "std": [0]}, "key 'std'"),
])
def test_the_cli_says_one_line_and_exits_2_for_forged_metadata(tmp_path, capsys, metadata, words):
    forged = _forge(tmp_path / "forged.safetensors", metadata, _zoo_state("resnet_1111-s0"))
    assert cli.main(["layers", f"file:{forged}"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


# --- item 7: NaN or infinite weights are refused wherever a file is read --------------------------

def _broken_state(value=math.nan) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in _zoo_state("resnet_1111-s0").items()}
    state["layer2.0.conv1.weight"].view(-1)[5] = value
    state["layer3.0.conv1.weight"].view(-1)[0] = value
    return state


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_naming_the_first_tensor(tmp_path, value):
    safetensors_file = _forge(tmp_path / "nan.safetensors", _zoo_metadata("resnet_1111-s0"), _broken_state(value))
    torch_file = tmp_path / "nan.pt"
    torch.save(_broken_state(value), torch_file)
    for path in (safetensors_file, torch_file):
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(path)
        message = _one_line(str(caught.value))
        assert f"{path.name} holds NaN or infinite weights in layer2.0.conv1.weight (and 1 more" in message


def test_non_finite_weights_are_refused_by_file_names_the_cli_and_uploads(tmp_path, uploads_home, capsys):
    from core.models.uploads import save_upload

    path = _forge(tmp_path / "nan.safetensors", _zoo_metadata("resnet_1111-s0"), _broken_state())
    with pytest.raises(CheckpointError, match="NaN or infinite weights in layer2.0.conv1.weight"):
        load_model(f"file:{path}")
    with pytest.raises(CheckpointError, match="NaN or infinite weights in layer2.0.conv1.weight"):
        save_upload(path.read_bytes(), "nan.safetensors", "nan", like="zoo/resnet_1111-s0")
    assert not list((uploads_home / "uploads").glob("*.safetensors"))
    assert cli.main(["layers", f"file:{path}"]) == 2
    assert "NaN or infinite weights in layer2.0.conv1.weight" in capsys.readouterr().err


def test_non_finite_weights_in_the_paper_zoo_are_refused(uploads_home):
    """``paper/`` models are files in the user's home (trained there, or copied in): read like uploads."""
    paper = uploads_home / "zoo-paper"
    config = zoo.zoo_entry("resnet_1111-s0")["config"]
    module = architectures.build_architecture(config)
    module.load_state_dict(_broken_state())
    weights = save_checkpoint(module, paper / "diverged.safetensors", {"config": config})
    entry = {**zoo.zoo_entry("resnet_1111-s0"), "name": "diverged", "file": weights.name,
             "sha256": zoo.sha256_of(weights)}
    (paper / "manifest.json").write_text(json.dumps({"models": [entry]}))
    with pytest.raises(CheckpointError, match="NaN or infinite weights in layer2.0.conv1.weight"):
        load_model("paper/diverged")


# --- item 4: weights uploaded again under their name are new results, never stale ones ------------

def test_replacing_an_upload_makes_its_stored_grid_and_cka_runs_stale(uploads_home, store):
    from core import runs
    from core.models.network import cached_model
    from core.models.uploads import UploadExists, save_upload

    mine = save_upload(_zoo_state_bytes("resnet_1111-s1"), "mine.safetensors", "mine")
    grid = {"sender": mine, "receiver": "zoo/resnet_1111-s0", "sender_layers": ["stem"],
            "receiver_layers": ["layer1.0"]}
    cka = {"model_a": mine, "model_b": "zoo/resnet_1111-s0"}
    stored = {}
    for kind, config in (("grid", grid), ("cka", cka)):
        stored[kind] = store.create_run(kind, runs.identity(kind, config, "cpu"))
        store.update_run(stored[kind], status="done")
        assert runs.find(store, kind, config)["id"] == stored[kind]
    old_output = cached_model(mine)(torch.ones(1, 1, 32, 32))
    old_keys = {kind: runs.identity_key(kind, config) for kind, config in (("grid", grid), ("cka", cka))}

    with pytest.raises(UploadExists):  # the dashboard asks first (tests/test_upload_messages.py: the page)
        save_upload(_zoo_state_bytes("resnet_1111-s0"), "other.safetensors", "mine")
    save_upload(_zoo_state_bytes("resnet_1111-s0"), "other.safetensors", "mine", replace=True)

    for kind, config in (("grid", grid), ("cka", cka)):
        assert runs.find(store, kind, config) is None  # never the old weights' numbers ...
        assert runs.identity_key(kind, config) != old_keys[kind]  # ... nor their queued job
        assert store.get_run(stored[kind])["status"] == "done"  # ... which stay stored
    assert not torch.equal(cached_model(mine)(torch.ones(1, 1, 32, 32)), old_output)  # reloaded, not cached


def _zoo_state_bytes(key: str) -> bytes:
    return (zoo.manifest_path().parent / zoo.zoo_entry(key)["file"]).read_bytes()


def test_the_models_page_shows_one_line_for_a_forged_upload(tmp_path, uploads_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.runs import jobs

    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py"),
                           default_timeout=120)
    at.run()
    at.switch_page("pages/models.py").run()
    forged = _forge(tmp_path / "forged.safetensors", {"config": {"arch": "resnet", "width": 100_000}})
    at.file_uploader(key="models_upload").set_value(("forged.safetensors", forged.read_bytes(), "application/x"))
    at.run()
    next(b for b in at.button if b.label == "Add checkpoint").click().run()
    assert not at.exception, [e.value for e in at.exception]  # was a RuntimeError (360 GB asked for)
    assert len(at.error) == 1 and "config key 'width' must be a whole number" in _one_line(at.error[0].value)
