"""Property: whatever the options of grid, cka, layers, runs and attribute hold, the command line
either runs (exit 0) or refuses in exactly one ``error:`` line with a non-zero exit code; never a
traceback.

Each example is one command line: a fast baseline (the smallest zoo ResNets, a few layers, the
first 64 images of every dataset, the CPU), then one option given a hostile value (NaN, inf, -1,
0, 1e308, 10**30, empty and 300-character strings, unicode, '../', control characters, unknown
and malformed model names, unwritable paths) and up to two more given any value; they override
the baseline. A torchvision network over 5 M parameters is refused by the budget, so nothing drawn is slow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import hostile
from tests.hostile import OTHER_SMALL_MODEL, SMALL_MODEL, run_cli

# Modest: most examples are refused in milliseconds, the ones that run (one in ten to two in
# three, by command) take 0.1 to 1 s: about 10 s for the five commands on two cores.
# STITCHLAB_PROPERTY_EXAMPLES=1000 searches longer.
EXAMPLES = int(os.environ.get("STITCHLAB_PROPERTY_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Text hypothesis makes up: no NUL (argv cannot hold it), no lone surrogates (not encodable), no
# '/' (a made-up absolute path could name a real file, and the tests may run as root).
made_up = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00/"), max_size=30)
numbers = st.one_of(st.sampled_from(hostile.NUMBERS), st.integers(-(10**30), 10**30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
strings = st.one_of(st.sampled_from(hostile.STRINGS), made_up)


@dataclass(frozen=True)
class Values:
    """An option's values: valid ones (an example refused at its first option never reaches the
    engine, where the rest of the bugs are) and hostile ones."""

    valid: tuple[str, ...]
    bad: st.SearchStrategy
    valid_share: int = 1  # of valid_share + 1 draws of any()

    def any(self) -> st.SearchStrategy:
        return st.integers(0, self.valid_share).flatmap(lambda k: st.sampled_from(self.valid) if k else self.bad)


def counts(*valid: str) -> Values:
    return Values(valid, numbers)


def words(*valid: str) -> Values:
    return Values(valid, strings)


models = Values((SMALL_MODEL, OTHER_SMALL_MODEL, f"{SMALL_MODEL}@random:2"),
                st.one_of(st.sampled_from(hostile.MODEL_NAMES), strings), valid_share=4)
layers = Values(("stem", "layer4.0", "stem,layer4.0", "layer1.0,layer3.0"),
                st.one_of(st.sampled_from(["layer9", "stem,stem", "layer4.0,", "fc", "x", ",", "stem;layer1.0"]),
                          strings))
outputs = Values(("-", "out.json", "sub/dir/out.json", "../out.json"),
                 st.one_of(st.sampled_from(hostile.OUTPUT_PATHS), made_up.map(lambda name: name + ".json")))
stores = Values(("store.sqlite3", "new.sqlite3", "deeper/new.sqlite3"),
                st.sampled_from(["", "plain-file", ".", "/proc/stitchlab/x.sqlite3", "x" * 300]))
devices = Values(("cpu", "auto"), st.one_of(st.sampled_from(hostile.DEVICES), strings))
datasets = Values(("fashion-mnist",), st.one_of(st.sampled_from(hostile.DATASETS), strings))

COMMANDS = {
    "grid": ([models, models],
             ["--device", "cpu", "--sender-layers", "stem,layer4.0", "--receiver-layers", "layer1.0,layer4.0",
              "--json", "-"],
             {"--sender-layers": layers, "--receiver-layers": layers, "--recipe": words("instant", "standard", "paper"),
              "--budget": words("quick", "full"), "--mode": words("train", "lstsq", "lstsq+train"),
              "--control": words("none", "random-sender", "random-receiver", "random-both"), "--dataset": datasets,
              "--epochs": counts("1", "0.5", "2"), "--batch-size": counts("8", "32", "256"),
              "--lr": counts("0.01", "0.1", "1e-4"), "--train-limit": counts("16", "64", "1000"),
              "--eval-limit": counts("16", "64", "1000"), "--max-stitch-params": counts("1000", "100000"),
              "--device": devices, "--seed": counts("0", "1", "7"), "--db": stores, "--json": outputs},
             ["--bn-before", "--bn-after", "--no-reuse", "--quiet"]),
    "cka": ([models, models],
            ["--device", "cpu", "--layers-a", "stem,layer4.0", "--layers-b", "layer1.0", "--json", "-"],
            {"--layers-a": layers, "--layers-b": layers, "--kernel": words("linear", "rbf"),
             "--sigma": counts("0.8", "0.1", "2"), "--batch-size": counts("4", "16", "500"),
             "--limit": counts("8", "64", "1000"), "--dataset": datasets, "--device": devices, "--json": outputs},
            ["--quiet"]),
    "layers": ([models], [], {"--json": outputs}, ["--all"]),
    "runs": ([], ["--db", "store.sqlite3"],
             {"--db": stores, "--kind": words("grid", "cka", "sweep", "attributions"), "--json": outputs}, []),
    "attribute": ([models], ["--method", "saliency", "--png", "figure.png"],
                  {"--stitch": Values(("-",), st.one_of(st.sampled_from(["abc:stem:layer1.0", "::", "a:b", "a:b:c:d"]),
                                                        strings)),
                   "--db": stores, "--method": words("ig", "saliency", "gradientshap", "occlusion", "gradcam"),
                   "--index": counts("0", "5", "63"), "--target": counts("0", "3", "9"), "--layer": layers,
                   "--dataset": datasets, "--seed": counts("0", "1"), "--device": devices,
                   "--png": Values(("figure.png", "sub/figure.png"), st.sampled_from(hostile.OUTPUT_PATHS)),
                   "--json": outputs},
                  []),
}


@st.composite
def command_lines(draw, command: str) -> list[str]:
    """One option with a hostile value, up to two more with any value, on top of the baseline."""
    positional, baseline, options, flags = COMMANDS[command]
    argv = [command] + [draw(values.any()) for values in positional] + list(baseline)
    hostile_option = draw(st.sampled_from(sorted(options)))
    argv += [hostile_option, draw(options[hostile_option].bad)]
    for option in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=2)):
        argv += [option, draw(options[option].any())]  # given twice: the last one counts, as in a shell
    return argv + [flag for flag in flags if draw(st.booleans())]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder to run in (two levels down, so '../' stays inside), holding a store with a grid,
    a plain file where a folder is expected, and small datasets; torchvision networks over 5 M
    parameters refused by the budget."""
    root = tmp_path_factory.mktemp("hostile")
    cwd = root / "a" / "b"
    cwd.mkdir(parents=True)
    (cwd / "plain-file").write_text("not a store, not a folder\n")
    with pytest.MonkeyPatch.context() as patch, hostile.small_datasets():
        patch.chdir(cwd)
        patch.setenv("STITCHLAB_MAX_MODEL_PARAMS", "5000000")
        patch.setenv("STITCHLAB_DB", str(cwd / "store.sqlite3"))
        made = run_cli(["grid", SMALL_MODEL, OTHER_SMALL_MODEL, "--mode", "lstsq", "--sender-layers", "stem",
                        "--receiver-layers", "layer4.0", "--device", "cpu", "--db", "store.sqlite3", "--json", "-",
                        "--quiet"])
        assert made.code == 0, made.describe()
        yield cwd


def _check(argv: list[str]) -> None:
    outcome = run_cli(argv)
    event("ran" if outcome.code == 0 else "refused")  # --hypothesis-show-statistics: how many got past the checks
    assert outcome.clean, f"python -m core {' '.join(map(repr, argv))}\n-> {outcome.describe()}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_options_run_or_are_refused_in_one_line(command, workspace):
    @SETTINGS
    @given(command_lines(command))
    def check(argv):
        _check(argv)

    check()
