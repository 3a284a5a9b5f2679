import threading

import numpy as np
import pytest
import torch
from torch import nn

from core import cli
from core.attribution.hygiene import lock_for
from core.attribution.methods import METHOD_LABELS, METHODS, attribute, compare
from core.data.datasets import load_dataset
from core.engine.grid import run_grid
from core.engine.stitched import StitchedClassifier, load_stitched
from core.engine.stitches import stitch
from core.models.network import Network, cached_model, load_model

PAIR = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def images():
    test = load_dataset("fashion-mnist", "test", 4)
    return test.images.float() / 255, test.labels


def _tiny(module: nn.Module, shape=(1, 4, 4)) -> Network:
    """A hand-checkable network: inputs normalised as (x - 0.5) / 0.25."""
    for p in module.parameters():
        p.requires_grad_(False)
    return Network("tiny", module.eval(), shape, 2, (0.5,), (0.25,), {})


def _completeness_gap(net, images, result):
    """|sum of attributions - (F(x) - F(baseline))| / |F(x) - F(baseline)| per image, baseline zeros."""
    with torch.no_grad():
        x = net.prepare(images)
        rows = torch.arange(len(x))
        target = torch.as_tensor(result.target)
        difference = (net.module(x)[rows, target] - net.module(torch.zeros_like(x))[rows, target]).numpy()
    return np.abs(result.raw.reshape(len(x), -1).sum(1) - difference) / np.abs(difference)


def test_integrated_gradients_of_a_linear_model_are_weight_times_input():
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.arange(32.0).view(2, 16) / 10)
    net = _tiny(nn.Sequential(nn.Flatten(), linear))
    image = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    result = attribute(net, image, target=1, method="ig", n_steps=4)
    expected = (linear.weight[1].view(4, 4) * (image[0, 0] - 0.5) / 0.25).numpy()  # w * (x - baseline)
    np.testing.assert_allclose(result.raw[0], expected, rtol=1e-5, atol=1e-5)
    assert result.signed and np.abs(result.display).max() == 1  # the largest |value| reaches the scale
    assert result.target.tolist() == [1] and result.probabilities.shape == (1, 2)


def test_integrated_gradients_are_complete_on_a_smooth_model():
    torch.manual_seed(0)
    net = _tiny(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 2)))
    images = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    result = attribute(net, images, method="ig", n_steps=64)
    assert (_completeness_gap(net, images, result) < 0.01).all()
    assert np.abs(result.delta).max() < 1e-3


def test_integrated_gradients_are_complete_on_a_zoo_resnet(images):
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    result = attribute(net, images[0][:2], method="ig", n_steps=128)
    assert (_completeness_gap(net, images[0][:2], result) < 0.03).all()


CHEAP = {  # a 224-pixel ResNet-18 on two CPU cores: fewer steps and windows, same code paths
    "ig": {"n_steps": 4}, "gradientshap": {"n_samples": 4},
    "occlusion": {"sliding_window_shapes": (3, 112, 112), "strides": (3, 112, 112)},
}


QUICK = {"ig": {"n_steps": 4}, "gradientshap": {"n_samples": 4},
         "occlusion": {"sliding_window_shapes": (1, 8, 8), "strides": (1, 8, 8)}}


UNSIGNED = {"saliency", "gradcam"}  # absolute gradient; ReLU of weighted activations
LAST_MAP = {"zoo/resnet_1111-s0": "layer4.0", "zoo/vgg_small-s0": "features.7",  # Grad-CAM's default layer:
            "torchvision/resnet18@random": "layer4.1"}  # the network's last spatial one


@pytest.mark.parametrize("name", list(LAST_MAP))
def test_every_method_gives_finite_maps_at_image_size(name, images):
    net = cached_model(name, "cpu")
    n = 1 if "torchvision" in name else 2
    batch = images[0][:n]  # 1 x 32 x 32; prepare() resizes to 3 x 224 x 224 for the torchvision network
    for method in METHODS:
        result = attribute(net, batch, method=method, **(CHEAP.get(method, {}) if "torchvision" in name else {}))
        assert result.raw.shape == result.display.shape == (n, 32, 32), method
        assert result.raw.dtype == np.float32 and np.isfinite(result.raw).all(), method
        low = -1 if result.signed else 0
        assert result.display.min() >= low and result.display.max() <= 1 and result.display.max() > 0, method
        assert result.probabilities.shape == (n, net.num_classes)
        assert result.predictions.tolist() == result.target.tolist()  # default target: the prediction
        assert result.name == net.name and result.label == METHOD_LABELS[method] and result.seconds > 0
        assert result.signed == (method not in UNSIGNED), method
        assert result.layer == (LAST_MAP[name] if method == "gradcam" else None), method


def _hooks_and_modes(module):
    return [(name, m.training, *(tuple(getattr(m, d)) for d in
                                 ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")))
            for name, m in module.named_modules()]


def test_models_are_left_as_found_even_when_the_forward_pass_raises(monkeypatch, images):
    net = load_model("zoo/resnet_1111-s0")  # a private copy: this test changes modes
    net.module.layer2.train()  # an unusual mixed state, to check it is restored rather than reset
    before, state = _hooks_and_modes(net.module), {k: v.clone() for k, v in net.module.state_dict().items()}

    for method in METHODS:  # a clean run: eval inside (BatchNorm statistics untouched), flags restored after
        attribute(net, images[0][:2], method=method, **QUICK.get(method, {}))
    assert _hooks_and_modes(net.module) == before
    assert all(torch.equal(v, net.module.state_dict()[k]) for k, v in state.items())

    calls = {"n": 0}

    def broken(x):
        calls["n"] += 1
        raise RuntimeError("boom inside the forward pass")

    monkeypatch.setattr(net.module.fc, "forward", broken)
    for method in METHODS:
        with pytest.raises(RuntimeError, match="boom"):
            attribute(net, images[0][:2], method=method, layer="layer3.0" if method == "gradcam" else None)
    assert calls["n"] == len(METHODS)
    assert _hooks_and_modes(net.module) == before


def test_attributions_on_one_model_take_turns(images):
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (attribute(net, images[0][:1], method="gradcam"), finished.set()))
    with lock_for(net.module):  # another session's attribution is running on this model
        worker.start()
        assert not finished.wait(1.0)
    worker.join(30)
    assert finished.is_set()


def test_gradientshap_is_seeded(images):
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    batch = images[0][:2]
    state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a, b = (attribute(net, batch, method="gradientshap", seed=3) for _ in range(2))
    c = attribute(net, batch, method="gradientshap", seed=4)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert not np.allclose(a.raw, c.raw)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random states are untouched
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_gradcam_at_a_named_layer(images):
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    default = attribute(net, images[0][:2], method="gradcam")
    named = attribute(net, images[0][:2], method="gradcam", layer="layer2.0")
    node = attribute(net, images[0][:2], method="gradcam", layer="layer2.0.relu_1")  # the same activation
    assert default.layer == "layer4.0" and named.layer == "layer2.0" and not default.signed
    assert not np.allclose(default.raw, named.raw)
    np.testing.assert_allclose(node.raw, named.raw, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        attribute(net, images[0][:1], method="gradcam", layer="layer9")
    with pytest.raises(ValueError, match="needs a spatial"):
        attribute(net, images[0][:1], method="gradcam", layer="fc")
    with pytest.raises(ValueError, match="runs 2 times"):
        attribute(net, images[0][:1], method="gradcam", layer="layer2.0.relu")
    with pytest.raises(ValueError, match="only to method 'gradcam'"):
        attribute(net, images[0][:1], method="ig", layer="layer2.0")


def test_bad_input_says_what_to_do(images):
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        attribute(net, images[0][:1], method="lime")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        attribute(net, net.prepare(images[0][:1]), method="saliency")
    with pytest.raises(ValueError, match="target class 10 is out of range"):
        attribute(net, images[0][:1], target=10, method="saliency")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    from core.runs.store import Store

    store = Store(tmp_path_factory.mktemp("attribution") / "results.sqlite3")
    result = run_grid({**PAIR, "sender_layers": ["layer2.0"], "receiver_layers": ["layer2.0", "layer3.0"],
                       "mode": "lstsq", "train_limit": 300, "eval_limit": 200}, store=store, device="cpu")
    return store, result.run_id


def test_compare_sender_receiver_and_a_stored_stitch(stored, images):
    store, run_id = stored
    net = load_stitched(store, run_id, "layer2.0", "layer3.0")
    batch, labels = images[0], images[1]
    with torch.no_grad():  # the adapter is the stitched network on the sender's prepared input
        assert torch.equal(net(batch), net.module(net.sender.prepare(batch)))
    maps = compare(net.sender, net.receiver, net, batch, method="saliency")
    assert list(maps) == ["sender", "receiver", "stitched"]
    receiver_says = maps["receiver"].predictions.tolist()
    assert all(a.target.tolist() == receiver_says and a.raw.shape == (4, 32, 32) for a in maps.values())
    assert maps["stitched"].name == "zoo/resnet_1111-s0:layer2.0 → zoo/resnet_1111-s1:layer3.0"
    truth = compare(net.sender, net.receiver, None, batch, target=labels, method="ig", n_steps=8)
    assert list(truth) == ["sender", "receiver"] and truth["sender"].target.tolist() == labels.tolist()

    cams = compare(net.sender, net.receiver, net, batch, method="gradcam",
                   layers={"sender": "layer2.0", "stitched": "sender:layer1.0"})
    assert cams["stitched"].layer == "sender:layer1.0" and cams["receiver"].layer == "layer4.0"
    assert attribute(net, batch, method="gradcam").layer == "stitch"
    assert attribute(net, batch, method="gradcam", layer="layer3.0").layer == "stitch"  # the cut is the stitch
    assert attribute(net, batch, method="gradcam", layer="layer4.0").layer == "layer4.0"
    with pytest.raises(ValueError, match="does not run in"):
        attribute(net, batch, method="gradcam", layer="layer2.0")  # the receiver's layer2.0 comes before the cut
    with pytest.raises(ValueError, match="does not run in"):
        attribute(net, batch, method="gradcam", layer="sender:layer3.0")


def test_a_bare_stitched_network_is_wrapped(r1111_pair, images):
    a, b = r1111_pair
    maps = compare(a, b, stitch(a, b, "layer1.0", "layer1.0", seed=0), images[0][:1], method="saliency")
    assert isinstance(maps["stitched"].raw, np.ndarray) and maps["stitched"].probabilities.shape == (1, 10)
    assert StitchedClassifier(a, stitch(a, b, "stem", "stem", seed=0)).num_classes == 10  # asked of the network


def test_load_stitched_says_what_is_missing(stored):
    store, run_id = stored
    with pytest.raises(KeyError, match="no run 'nope'"):
        load_stitched(store, "nope", "layer2.0", "layer2.0")
    with pytest.raises(KeyError, match="has no cell layer4.0 -> layer2.0; its finished cells are layer2.0->"):
        load_stitched(store, run_id, "layer4.0", "layer2.0")
    store.put_cell(run_id, "stem", "stem", "failed", None, {"reason": "diverged"})
    with pytest.raises(ValueError, match="is 'failed' \\(diverged\\)"):
        load_stitched(store, run_id, "stem", "stem")


def test_cli_draws_a_png(tmp_path, stored, capsys):
    png = tmp_path / "one.png"
    assert cli.main(["attribute", "zoo/resnet_1111-s0", "--method", "saliency", "--index", "3",
                     "--png", str(png), "--json", str(tmp_path / "one.json")]) == 0
    assert png.read_bytes().startswith(PNG)
    store, run_id = stored
    png = tmp_path / "three.png"
    assert cli.main(["attribute", "-", "--stitch", f"{run_id}:layer2.0:layer2.0", "--db", str(store.path),
                     "--method", "gradcam", "--index", "1", "--png", str(png)]) == 0
    assert png.read_bytes().startswith(PNG)
    capsys.readouterr()


@pytest.mark.parametrize("args,expected", [
    (["zoo/resnet_1111-s0", "--method", "lime"], "unknown method 'lime'"),
    (["zoo/resnet_1111-s0", "--index", "10000"], "--index 10000 is out of range"),
    (["-"], "needs --stitch"),
    (["-", "--stitch", "abc"], "--stitch takes RUN_ID:SENDER_LAYER:RECEIVER_LAYER"),
])
def test_cli_bad_input_is_one_line(args, expected, tmp_path, capsys):
    assert cli.main(["attribute", *args, "--png", str(tmp_path / "x.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "x.png").exists()


def test_an_uploaded_picture_is_read_or_refused_with_one_message():
    import io
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from ui.attributions import uploaded_pixels

    def uploaded_image(data, _dataset):
        return np.asarray(uploaded_pixels(data, (1, 32, 32)))

    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(png, "PNG")
    picture = uploaded_image(png.getvalue(), "fashion-mnist")
    assert picture.shape == (1, 32, 32) and 0 < picture.min() == picture.max() <= 255  # one grey, at 32 x 32
    with pytest.raises(ValueError, match="not a picture StitchLab can read; upload a PNG or JPEG$"):
        uploaded_image(b"not a picture", "fashion-mnist")  # one sentence: no Python object in it
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)  # a 60,000 x 60,000 PNG, by its header
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="far too large"):
        uploaded_image(bomb, "fashion-mnist")
