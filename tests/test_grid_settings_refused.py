"""Grid settings that would run and come out silently wrong are refused with one line (issue 19,
items 7 and 8): NaN or infinite learning rate, epochs, momentum or weight decay; a layer named
twice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core import paths
from core.runs.recipes import grid_config

PAIR = ("zoo/resnet_1111-s0", "zoo/resnet_2222-s0")


@pytest.mark.parametrize("field, value, words", [
    ("lr", float("nan"), "lr must be a finite number"), ("lr", float("inf"), "lr must be a finite number"),
    ("epochs", float("inf"), "epochs must be a finite number"), ("momentum", float("nan"), "momentum"),
    ("momentum", 1.0, "momentum must be at least 0 and below 1"), ("weight_decay", -0.1, "weight-decay"),
    ("sender_layers", ["stem", "stem"], "sender-layers names stem more than once"),
    ("receiver_layers", ["layer1.0", "stem", "layer1.0"], "receiver-layers names layer1.0 more than once"),
])
def test_a_setting_that_would_run_wrong_is_refused(field, value, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        grid_config(*PAIR, "paper", "quick", **{field: value})


@pytest.mark.parametrize("flags", [["--lr", "nan"], ["--epochs", "inf"], ["--sender-layers", "stem,stem"]])
def test_the_cli_refuses_them_in_one_line(flags, tmp_path):
    done = subprocess.run([sys.executable, "-m", "core", "grid", *PAIR, "--mode", "train", *flags, "--json",
                           str(tmp_path / "g.json"), "--db", str(tmp_path / "s.sqlite3")],
                          cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "g.json").exists()
