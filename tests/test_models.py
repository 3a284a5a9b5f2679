import shutil
import urllib.error

import pytest
import torch
import torchvision

from core.models import zoo
from core.models.checkpoints import CheckpointError, save_checkpoint
from core.models.network import list_models, load_model
from core.models.sources import ModelName, check, fingerprint, parse


def test_names_and_suffixes():
    assert parse("zoo/resnet_1111-s0") == ModelName("zoo/", "resnet_1111-s0", None)
    assert parse("zoo/resnet_1111-s0@random") == ModelName("zoo/", "resnet_1111-s0", 0)
    assert parse("torchvision/resnet18@random:7") == ModelName("torchvision/", "resnet18", 7)
    assert str(parse("file:/x/y.safetensors@random")) == "file:/x/y.safetensors@random:0"
    with pytest.raises(ValueError, match="unknown model suffix"):
        parse("zoo/x@trained")
    with pytest.raises(ValueError, match="names start with"):
        parse("zoo/")
    with pytest.raises(ValueError, match="names start with"):
        load_model("resnet18")
    with pytest.raises(zoo.ZooError, match="python -m core models"):
        load_model("zoo/resnet_9999-s0")


def test_zoo_model_is_frozen_and_classifies():
    net = load_model("zoo/resnet_1111-s0")
    assert not net.module.training and not any(p.requires_grad for p in net.module.parameters())
    assert net(torch.rand(4, 1, 32, 32)).shape == (4, 10)
    assert net.info["test_accuracy"] > 0.9


def test_random_copies_are_seeded_and_differ_from_trained():
    trained = load_model("zoo/resnet_1111-s0")
    a, b, c = (load_model(f"zoo/resnet_1111-s0@random:{s}") for s in (3, 3, 4))
    first = next(iter(trained.module.state_dict()))
    assert torch.equal(a.module.state_dict()[first], b.module.state_dict()[first])
    assert not torch.equal(a.module.state_dict()[first], c.module.state_dict()[first])
    assert not torch.equal(a.module.state_dict()[first], trained.module.state_dict()[first])
    assert a.name == "zoo/resnet_1111-s0@random:3"
    assert a.info["random_seed"] == 3 and a.info["test_accuracy"] is None
    same = trained.random_copy(3)  # the two ways to a random copy agree
    assert all(torch.equal(v, same.module.state_dict()[k]) for k, v in a.module.state_dict().items())


def test_a_random_model_is_built_once(monkeypatch):
    import core.models.network as models

    builds = []
    real = models.build_architecture
    monkeypatch.setattr(models, "build_architecture", lambda config: builds.append(config) or real(config))
    load_model("zoo/resnet_1111-s0@random:5")
    load_model("torchvision/resnet18@random")
    assert len(builds) == 2


def test_altered_or_missing_zoo_weights_are_reported(tmp_path, monkeypatch):
    copy = tmp_path / "zoo"
    shutil.copytree(zoo.manifest_path().parent, copy)
    monkeypatch.setenv("STITCHLAB_ZOO", str(copy))
    zoo._read_manifest_cached.cache_clear()
    weights = copy / "resnet_1111-s0.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="was altered"):
        load_model("zoo/resnet_1111-s0")
    weights.unlink()
    with pytest.raises(zoo.ZooError, match="is missing"):
        load_model("zoo/resnet_1111-s0")
    zoo._read_manifest_cached.cache_clear()


def test_torchvision_random_and_offline_message(monkeypatch):
    net = load_model("torchvision/resnet18@random")
    assert net.input_shape == (3, 224, 224) and net.num_classes == 1000

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ValueError, match=r"torchvision/resnet18@random"):
        load_model("torchvision/resnet18")


def test_file_checkpoints(tmp_path):
    trained = load_model("zoo/resnet_1111-s0")
    meta = {"config": trained.config, "dataset": "fashion-mnist", "input_shape": [1, 32, 32],
            "mean": list(trained.mean), "std": list(trained.std)}
    own = save_checkpoint(trained.module, tmp_path / "mine.safetensors", meta, dtype=torch.float32)
    loaded = load_model(f"file:{own}")
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(loaded(x), trained(x))

    plain = tmp_path / "plain.pt"
    torch.save(trained.module.state_dict(), plain)
    with pytest.raises(CheckpointError, match="carries no architecture"):
        load_model(f"file:{plain}")
    assert torch.equal(load_model(f"file:{plain}", config=trained.config)(x), trained(x))

    with pytest.raises(CheckpointError, match=r"missing keys: .*layer1\.1"):
        load_model(f"file:{plain}", config={**trained.config, "blocks": [2, 1, 1, 1]})


def test_a_checkpoint_saved_again_under_its_name_is_reloaded(tmp_path):
    from core.models.network import cached_model

    first, second = load_model("zoo/resnet_1111-s0"), load_model("zoo/resnet_1111-s1")
    meta = {"config": first.config, "dataset": "fashion-mnist", "input_shape": [1, 32, 32],
            "mean": list(first.mean), "std": list(first.std)}
    path = tmp_path / "mine.safetensors"
    x = torch.rand(3, 1, 32, 32)
    save_checkpoint(first.module, path, meta, dtype=torch.float32)
    assert torch.equal(cached_model(f"file:{path}", "cpu")(x), first(x))
    save_checkpoint(second.module, path, meta, dtype=torch.float32)  # the same name, other weights
    assert torch.equal(cached_model(f"file:{path}", "cpu")(x), second(x))


def test_list_models_covers_the_zoo():
    rows = list_models()
    assert {r["name"] for r in rows} >= {"zoo/resnet_1111-s0", "zoo/resnet_2222-s1", "zoo/vgg_small-s0"}
    assert all(r["test_accuracy"] >= 0.9 for r in rows)


def test_a_name_is_checked_and_fingerprinted_without_loading_torch_models(tmp_path):
    """The sidebar's check: known zoo names pass, unknown ones and paths outside the allowed
    uploads are refused with the reason; a file's fingerprint follows its bytes."""
    assert check("zoo/resnet_1111-s0@random:2").seed == 2
    with pytest.raises(zoo.ZooError, match="unknown zoo model"):
        check("zoo/resnet_9999-s0")
    with pytest.raises(ValueError, match="not an uploaded checkpoint"):
        check("file:/etc/passwd", allowed_files=[])
    with pytest.raises(ValueError, match="not a torchvision architecture"):
        check("torchvision/../../x")
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"one")
    first = fingerprint(f"file:{path}")
    assert fingerprint(f"file:{path}@random:1") == first
    path.write_bytes(b"other bytes")
    assert fingerprint(f"file:{path}") != first


def test_an_upload_keeps_its_layers_so_the_dashboard_lists_them_without_loading_it(monkeypatch):
    from core.models import catalog, network
    from core.models.uploads import save_upload

    weights = zoo.manifest_path().parent / zoo.zoo_entry("resnet_1111-s1")["file"]
    name = save_upload(weights.read_bytes(), "mine.safetensors", "layers-test", like="zoo/resnet_1111-s0")
    monkeypatch.setattr(network, "_cached_model", lambda *a: pytest.fail("the upload was loaded to list its layers"))
    assert catalog.layers_of(name) == catalog.layers_of("zoo/resnet_1111-s0")


def _torchvision_file(path, classes: int | None):
    """squeezenet1_1 (1.2 M parameters) saved with ``classes`` outputs and a config that leaves
    ``num_classes`` unsaid."""
    torch.manual_seed(0)
    module = torchvision.models.squeezenet1_1(weights=None, num_classes=classes)
    meta = {"config": {"arch": "torchvision", "name": "squeezenet1_1"}, "dataset": "cifar10",
            "input_shape": [3, 64, 64], "mean": [0.5] * 3, "std": [0.25] * 3}
    save_checkpoint(module, path, meta, dtype=torch.float32)
    return module


@pytest.mark.parametrize("classes", [10, 1000])
def test_a_torchvision_file_without_num_classes_predicts_as_many_classes_as_its_head(tmp_path, classes):
    """It said 10 whatever the file held, and a 10-class head did not even load (torchvision's default is 1000)."""
    module = _torchvision_file(tmp_path / "tv.safetensors", classes).eval()
    net = load_model(f"file:{tmp_path / 'tv.safetensors'}")
    x = torch.rand(2, 3, 64, 64)
    assert net.num_classes == classes and net(x).shape == (2, classes)
    assert torch.equal(net(x), module(net.prepare(x)))
    assert net.config["num_classes"] == classes  # so that a random copy builds the same head
    assert net.random_copy(1)(x).shape == (2, classes)


def test_a_torchvision_file_given_its_config_reads_its_classes_too(tmp_path):
    torch.manual_seed(0)
    plain = tmp_path / "plain.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None, num_classes=7).state_dict(), plain)
    net = load_model(f"file:{plain}", config={"arch": "torchvision", "name": "squeezenet1_1"})
    assert net.num_classes == 7 and net.module(torch.rand(1, 3, 64, 64)).shape == (1, 7)
    assert net.input_shape[0] == 3  # its own channels (it said 1, so every image was refused)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 7)  # Fashion-MNIST's grey images, repeated


def test_a_torchvision_file_without_its_head_is_refused_naming_it(tmp_path):
    plain = tmp_path / "headless.pt"
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.1.")}, plain)
    with pytest.raises(CheckpointError, match=r"missing keys: classifier\.1\.weight, classifier\.1\.bias"):
        load_model(f"file:{plain}", config={"arch": "torchvision", "name": "squeezenet1_1"})


def test_the_zoo_architectures_keep_ten_classes_by_default(tmp_path):
    trained = load_model("zoo/resnet_1111-s0")
    config = {k: v for k, v in trained.config.items() if k != "num_classes"}
    plain = tmp_path / "plain.pt"
    torch.save(trained.module.state_dict(), plain)
    net = load_model(f"file:{plain}", config=config)
    assert net.num_classes == 10 and "num_classes" not in net.config


def test_an_upload_of_a_torchvision_network_reads_its_classes_from_its_head(tmp_path):
    """Uploads built straight from the config: torchvision's 1,000 classes, so a 10-class head was
    refused as a shape mismatch."""
    from core.models.uploads import save_upload

    plain = tmp_path / "ten.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None, num_classes=10).state_dict(), plain)
    name = save_upload(plain.read_bytes(), "ten.pt", "tv-ten-classes", replace=True,
                       config={"arch": "torchvision", "name": "squeezenet1_1"})
    net = load_model(name)
    assert net.num_classes == 10 and net.config["num_classes"] == 10
