import json
import subprocess
import sys

import pytest


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout)


def test_models_and_layers():
    out = _cli("models")
    assert out.returncode == 0 and "zoo/resnet_1111-s0" in out.stdout
    out = _cli("layers", "zoo/resnet_1112-s0", "--json", "-")
    layers = json.loads(out.stdout)
    assert [lay["name"] for lay in layers][:3] == ["stem", "layer1.0", "layer2.0"]
    assert layers[0]["shape"] == [16, 32, 32]


def test_grid_json_has_the_documented_shape(tmp_path):
    path = tmp_path / "grid.json"
    out = _cli("grid", "zoo/resnet_1111-s0", "zoo/resnet_1112-s0", "--sender-layers", "stem,layer4.0",
               "--receiver-layers", "layer1.0,layer4.0,layer4.1", "--mode", "lstsq", "--train-limit", "300",
               "--eval-limit", "200", "--device", "cpu", "--json", str(path), "--quiet")
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    for key in ("sender", "receiver", "sender_layers", "receiver_layers", "accuracy", "sender_accuracy",
                "receiver_accuracy", "mode", "control", "seconds"):
        assert key in data
    assert data["sender_layers"] == ["stem", "layer4.0"] and data["receiver_layers"] == ["layer1.0", "layer4.0",
                                                                                        "layer4.1"]
    assert len(data["accuracy"]) == 2 and all(len(row) == 3 for row in data["accuracy"])
    assert data["mode"] == "lstsq" and data["control"] == "none"


@pytest.mark.parametrize("args,expected", [
    (["grid", "zoo/nope", "zoo/resnet_1111-s1"], "unknown zoo model 'nope'"),
    (["grid", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "--sender-layers", "layer9"],
     "unknown layer 'layer9' of zoo/resnet_1111-s0"),
    (["grid", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "--mode", "fast"], "unknown mode 'fast'"),
    (["grid", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "--max-stitch-params", "5", "--mode", "lstsq"],
     "no pair of this grid is stitchable"),
    (["layers", "resnet18"], "names start with 'zoo/'"),
    (["grid", "zoo/resnet_1111-s0"], "required: receiver"),
])
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
    if args[0] == "grid" and "--json" not in args and len(args) > 2:
        args = args + ["--json", str(tmp_path / "x.json"), "--device", "cpu", "--eval-limit", "100",
                       "--train-limit", "100", "--quiet"]
    out = _cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_lesson_build_writes_its_material(tmp_path, monkeypatch):
    from core.runs import lesson

    pair = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_2222-s0"}
    monkeypatch.setattr(lesson, "LESSON_GRIDS", {"deeper_lstsq": {**pair, "mode": "lstsq",
                                                                  "pairs": [["layer4.0", "layer1.0"]]}})
    out = lesson.build_lesson(device="cpu", out=tmp_path / "lesson.json", train_limit=64, eval_limit=100,
                              log=lambda *_: None)
    material = lesson.read_lesson(out)
    grid = material["grids"]["deeper_lstsq"]
    scored = [v for row in grid["accuracy"] for v in row if v is not None]
    assert len(scored) == 1 and 0.0 <= scored[0] <= 1.0
    assert len(material["cka"]["cka"]) == len(material["cka"]["layers_a"]) and material["cka"]["n_examples"] == 100
    assert material["made_with"]["device"].startswith("cpu") and material["made_with"]["eval_limit"] == 100
