"""Hostile inputs, counted: what a command line or a link can make StitchLab do (issue 19).

Every probe is one hostile input: the command lines of the issue and of tests/test_cli_hostile.py
(unknown devices, decompression bombs, unwritable outputs, settings too large to run, models
over the parameter budget...), every option of grid, cka, layers, runs, attribute and sweep
given each hostile value of tests/hostile.py in turn (NaN, inf, -1, 0, 1e308, 10**30, empty,
300-character and unicode strings, '../', control characters, unknown and malformed model
names, unwritable paths), and every page opened by a forged link.

Each probe runs in a worker process, in-process through ``core.cli.main`` (pages through
Streamlit's AppTest), with every dataset cut to its first 64 images and a parameter budget of
5 M (as a shared server would set), so a command that runs takes well under a second. A probe
still running after ``--timeout`` seconds is a hang: its worker is killed and a new one serves
the rest. Counted:

* clean refusals: a non-zero exit with exactly one ``error:`` line on stderr;
* ran fine: exit 0 (a page: it rendered and queued only networks it offers);
* tracebacks: an exception out of ``main`` or a page, or a refusal that is not one line (0 wanted);
* hangs (0 wanted);
* results lost: runs of a store filled before the probes, missing or changed after them (0 wanted).

    python -m bench.adversarial_probes [--timeout 60] [--only issue,options,links]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = "5000000"  # parameters: a shared server's budget; every zoo model fits, resnet18 (11.7 M) does not

SMALL, OTHER = "zoo/resnet_1111-s0", "zoo/resnet_1111-s1"
GRID = ["grid", SMALL, OTHER, "--device", "cpu", "--sender-layers", "stem,layer4.0", "--receiver-layers",
        "layer1.0,layer4.0", "--quiet"]
CKA = ["cka", SMALL, OTHER, "--device", "cpu", "--layers-a", "stem,layer4.0", "--layers-b", "layer1.0", "--quiet"]
ATTRIBUTE = ["attribute", SMALL, "--method", "saliency", "--png", "figure.png"]
SWEEP = ["sweep", "--models", "zoo/nope-*", "--name", "probe", "--device", "cpu", "--quiet"]


def issue_probes(workspace: Path) -> list[tuple[str, tuple]]:
    """The issue's command lines and the forged inputs of tests/test_cli_hostile.py."""
    folder = workspace / "folders"
    unwritable = str(workspace / "plain-file" / "out.json")
    probes = [
        (f"--device {device} ({argv[0]})", ("cli", argv + ["--json", "-", "--device", device]))
        for device in ("tpu", "cuda:x", "", "meta") for argv in (GRID, CKA)
    ] + [
        ("attribute --device tpu", ("cli", ATTRIBUTE + ["--device", "tpu"])),
        ("a decompression bomb (100,000 x 100,000) in folder:", ("cli", CKA + ["--json", "-", "--dataset",
                                                                              f"folder:{folder / 'bomb'}"])),
        ("a 100-megapixel image in folder:", ("cli", CKA + ["--json", "-", "--dataset", f"folder:{folder / 'big'}"])),
        ("an unreadable image in folder:", ("cli", CKA + ["--json", "-", "--dataset", f"folder:{folder / 'broken'}"])),
        ("a folder: linking to itself", ("cli", CKA + ["--json", "-", "--dataset", f"folder:{folder / 'loop'}"])),
        ("grid --json unwritable, no --db", ("cli", GRID + ["--json", unwritable])),
        ("cka --json unwritable", ("cli", CKA + ["--json", unwritable])),
        ("layers --json unwritable", ("cli", ["layers", SMALL, "--json", unwritable])),
        ("sweep --json unwritable", ("cli", SWEEP + ["--json", unwritable])),
        ("attribute --png unwritable", ("cli", ["attribute", SMALL, "--png", unwritable])),
        ("attribute --json unwritable", ("cli", ATTRIBUTE + ["--json", unwritable])),
        ("grid --json /dev/full (the disk fills during the work)", ("cli", GRID + ["--json", "/dev/full"])),
        ("runs --kind bogus", ("cli", ["runs", "--db", "store.sqlite3", "--kind", "bogus"])),
        ("grid --epochs inf", ("cli", GRID + ["--json", "-", "--epochs", "inf"])),
        ("grid --epochs 1e308", ("cli", GRID + ["--json", "-", "--epochs", "1e308"])),
        ("grid --lr nan", ("cli", GRID + ["--json", "-", "--lr", "nan"])),
        ("grid --lr 1e308", ("cli", GRID + ["--json", "-", "--lr", "1e308"])),
        ("grid --sender-layers stem,stem", ("cli", GRID + ["--json", "-", "--sender-layers", "stem,stem"])),
        ("cka --kernel rbf --sigma 1e308", ("cli", CKA + ["--json", "-", "--kernel", "rbf", "--sigma", "1e308"])),
        ("attribute --seed 10**30", ("cli", ATTRIBUTE + ["--method", "gradientshap", "--seed", str(10**30)])),
        ("attribute --target 10**30", ("cli", ATTRIBUTE + ["--target", str(10**30)])),
        ("layers zoo/...@random:10**30", ("cli", ["layers", f"{SMALL}@random:{10**30}"])),
        ("attribute torchvision/resnet18@random (over the budget)", ("cli", ["attribute", "torchvision/resnet18@random",
                                                                             "--png", "figure.png"])),
        ("a 1,000-class network scored on Fashion-MNIST", ("call", "imagenet_sized_predictions")),
    ]
    probes += [(f"layers torchvision/vit_l_16@random:{seed} (over the budget)",
                ("cli", ["layers", f"torchvision/vit_l_16@random:{seed}"])) for seed in (1, 2, 3)]
    return probes


def option_probes() -> list[tuple[str, tuple]]:
    """Every option of grid, cka, layers, runs, attribute and sweep given each hostile value in turn."""
    from tests import hostile

    numbers, strings = hostile.NUMBERS, hostile.STRINGS
    stores = ["", "plain-file", ".", "/proc/stitchlab/x.sqlite3", "x" * 300, "deeper/new.sqlite3"]
    outputs = hostile.OUTPUT_PATHS
    table = {
        "grid": (GRID + ["--json", "-", "--db", "store.sqlite3"], {
            **{flag: numbers for flag in ("--epochs", "--batch-size", "--lr", "--train-limit", "--eval-limit",
                                          "--max-stitch-params", "--seed")},
            **{flag: strings for flag in ("--sender-layers", "--receiver-layers", "--recipe", "--budget", "--mode",
                                          "--control")},
            "--dataset": hostile.DATASETS, "--device": hostile.DEVICES, "--db": stores, "--json": outputs}),
        "cka": (CKA + ["--json", "-"], {
            **{flag: numbers for flag in ("--sigma", "--batch-size", "--limit")},
            **{flag: strings for flag in ("--layers-a", "--layers-b", "--kernel")},
            "--dataset": hostile.DATASETS, "--device": hostile.DEVICES, "--json": hostile.OUTPUT_PATHS}),
        "layers": (["layers", SMALL], {"--json": hostile.OUTPUT_PATHS}),
        "runs": (["runs", "--db", "store.sqlite3"], {"--kind": strings, "--db": stores, "--json": outputs}),
        "attribute": (ATTRIBUTE, {
            **{flag: numbers for flag in ("--index", "--target", "--seed")},
            **{flag: strings for flag in ("--stitch", "--method", "--layer")},
            "--dataset": hostile.DATASETS, "--device": hostile.DEVICES, "--db": stores, "--png": hostile.OUTPUT_PATHS,
            "--json": hostile.OUTPUT_PATHS}),
        "sweep": (SWEEP, {
            **{flag: numbers for flag in ("--epochs", "--train-limit", "--eval-limit")},
            **{flag: strings for flag in ("--models", "--pairs", "--controls", "--mode", "--executor", "--name")},
            "--device": hostile.DEVICES, "--db": stores, "--json": hostile.OUTPUT_PATHS}),
    }
    probes = []
    for command, (baseline, options) in table.items():
        for flag, values in options.items():
            probes += [(f"{command} {flag} {value!r}"[:120], ("cli", baseline + [flag, value])) for value in values]
    for name in hostile.MODEL_NAMES:  # positional model names
        probes += [(f"grid {name!r} {OTHER}", ("cli", ["grid", name, OTHER] + GRID[3:] + ["--json", "-"])),
                   (f"cka {SMALL} {name!r}", ("cli", ["cka", SMALL, name] + CKA[3:] + ["--json", "-"])),
                   (f"layers {name!r}", ("cli", ["layers", name])),
                   (f"attribute {name!r}", ("cli", ["attribute", name] + ATTRIBUTE[2:]))]
    return probes


LINKS = {
    "everything": {"sender": "torchvision/vit_l_16@random:1", "receiver": f"{SMALL}@random:{10**30}",
                   "dataset": "folder:/etc", "device": "tpu", "run": "../../etc/passwd", "attr_pos": "99999999",
                   "attr_method": "bogus", "cell_i": "layer9", "cell_j": "x" * 300, "s_layers": "layer9",
                   "recipe": "bogus", "budget": "bogus", "metric": "nan", "controls": "bogus", "cka_kernel": "bogus",
                   "models_model": "file:/etc/passwd", "sweep": "../x", "step": "-1", "runs_kind": "bogus",
                   "runs_text": "\x1b[31m"},
    "issue (torchvision receiver)": {"receiver": "torchvision/resnet18@random"},
    "issue (a new big sender per link)": {"sender": "torchvision/vit_l_16@random:2"},
    "a path on the server": {"sender": "file:/etc/passwd", "receiver": "file:../../x.safetensors"},
}
PAGES = ["stitching", "cka", "attributions", "models", "runs", "sweeps", "lesson"]


def link_probes() -> list[tuple[str, tuple]]:
    return [(f"/{page}?{name}", ("link", params, page)) for name, params in LINKS.items() for page in PAGES]


# --- the worker ------------------------------------------------------------------------------------
def _prepare(workspace: Path) -> None:
    """In the worker: its own home, the workspace as current folder, small datasets, the budget."""
    os.environ["STITCHLAB_HOME"] = str(workspace / "home")
    os.environ["STITCHLAB_MAX_MODEL_PARAMS"] = BUDGET
    os.environ["STITCHLAB_DB"] = str(workspace / "store.sqlite3")
    os.chdir(workspace)
    sys.path.insert(0, str(ROOT))
    import warnings

    import torch

    from tests import hostile

    warnings.simplefilter("ignore")  # a library's warning is not the CLI's output
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    # Entered for the worker's life; kept referenced, or collecting it would restore the full datasets.
    _prepare.small_datasets = hostile.small_datasets()
    _prepare.small_datasets.__enter__()


def _serve(connection, workspace: str) -> None:
    _prepare(Path(workspace))
    while True:
        probe = connection.recv()
        if probe is None:
            return
        try:
            connection.send(_run(probe, Path(workspace)))
        except BaseException as exc:  # noqa: BLE001 - the probe harness itself must keep serving
            connection.send({"outcome": "traceback", "detail": f"{type(exc).__name__}: {exc}"[:300]})


def _run(probe: tuple, workspace: Path) -> dict:
    from tests.hostile import run_cli

    if probe[0] == "cli":
        outcome = run_cli(probe[1])
        if outcome.code == 0 and outcome.exception is None:
            return {"outcome": "ran fine", "detail": ""}
        kind = "clean refusal" if outcome.clean else "traceback"
        return {"outcome": kind, "detail": outcome.describe()[:300]}
    if probe[0] == "link":
        return _open_link(*probe[1:], workspace)
    return globals()[f"_call_{probe[1]}"]()


def _open_link(params: dict, page: str, workspace: Path) -> dict:
    import logging

    from streamlit.testing.v1 import AppTest

    for name in list(logging.root.manager.loggerDict):  # "missing ScriptRunContext" once per page: noise here
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)

    from core.models import catalog, network, sources
    from core.runs import jobs
    from core.runs.store import Store

    db = workspace / f"links-{page}.sqlite3"
    saved = {name: getattr(network, name) for name in ("load_model", "cached_model")}
    saved_worker, saved_db = jobs.ensure_worker, os.environ["STITCHLAB_DB"]

    def refuse(*args, **kwargs):
        raise AssertionError("a page loaded a network in the server process")

    try:
        os.environ["STITCHLAB_DB"] = str(db)
        jobs.ensure_worker = lambda *a, **k: 0  # jobs stay queued: what they name is checked below
        network.load_model = network.cached_model = refuse
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params.update(params)
        at.run()
        at.switch_page(f"pages/{page}.py")
        at.run()
        if at.exception:
            return {"outcome": "traceback", "detail": str(at.exception[0].value)[:300]}
        offered = set(catalog.model_names())
        for job in jobs.list_jobs(Store(db)):
            for config in job["params"]["configs"]:
                for key in ("model", "sender", "receiver", "model_a", "model_b"):
                    name = config.get(key)
                    model = sources.parse(name) if name else None
                    if model and (model.base not in offered or abs(model.seed or 0) >= 2**63):
                        return {"outcome": "traceback", "detail": f"queued {name!r}, which the pages do not offer"}
        return {"outcome": "ran fine", "detail": ""}
    finally:
        os.environ["STITCHLAB_DB"] = saved_db
        jobs.ensure_worker = saved_worker
        for name, value in saved.items():
            setattr(network, name, value)


def _call_imagenet_sized_predictions() -> dict:
    """The receiver of a shared link scored on the test set by a 1,000-class network (Fashion-MNIST has 10 names)."""
    import torch

    from core.models import network
    from core.runs import analysis
    from core.runs.store import Store

    class ImageNetSized:
        name, num_classes = SMALL, 1000

        def __call__(self, images):
            return torch.arange(1000.0).expand(len(images), -1)

    saved = network.cached_model
    network.cached_model = lambda name, device="cpu": ImageNetSized()
    try:
        store = Store(Path(tempfile.mkdtemp()) / "predictions.sqlite3")
        run_id = analysis.run_predictions(analysis.predictions_config(SMALL), store, device="cpu")
        predictions = analysis.load_artifact(store, run_id)["predictions"]
        bad = [k for k in predictions if k >= 10]
        if bad:  # the Attributions page indexes Fashion-MNIST's 10 class names with these
            return {"outcome": "traceback", "detail": f"stored predictions up to class {max(bad)} for 10 class names"}
        return {"outcome": "ran fine", "detail": ""}
    except ValueError as exc:
        return {"outcome": "clean refusal", "detail": str(exc)[:300]}
    finally:
        network.cached_model = saved


# --- the harness -----------------------------------------------------------------------------------
class Worker:
    """One probe at a time in a spawned process; killed and replaced when a probe hangs."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.process = None

    def run(self, probe: tuple, timeout: float) -> dict:
        if self.process is None:
            context = multiprocessing.get_context("spawn")
            self.connection, child = context.Pipe()
            self.process = context.Process(target=_serve, args=(child, str(self.workspace)), daemon=True)
            self.process.start()
        self.connection.send(probe)
        if self.connection.poll(timeout):
            try:
                return self.connection.recv()
            except EOFError:  # the worker died (killed for memory, a crash in C code)
                self.stop()
                return {"outcome": "traceback", "detail": "the process died"}
        self.stop()
        return {"outcome": "hang", "detail": f"still running after {timeout:.0f} s"}

    def stop(self, politely: bool = False) -> None:
        if self.process is not None:
            if politely:  # between probes: let it exit on its own
                self.connection.send(None)
                self.process.join(10)
            self.process.kill()
            self.process.join()
            self.process = None


def _make_workspace() -> Path:
    from tests.hostile import image_folder

    workspace = Path(tempfile.mkdtemp(prefix="stitchlab-probes-")) / "a" / "b"  # '../' stays inside
    workspace.mkdir(parents=True)
    (workspace / "plain-file").write_text("a file where a folder or a store is expected\n")
    folders = workspace / "folders"
    image_folder(folders / "bomb", bomb=(100_000, 100_000))
    image_folder(folders / "big", bomb=(10_000, 10_000))
    image_folder(folders / "broken")
    (folders / "broken" / "shirt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    image_folder(folders / "loop")
    (folders / "loop" / "shirt" / "loop").symlink_to(folders / "loop", target_is_directory=True)
    return workspace


def _store_contents(path: Path) -> dict:
    from core.runs.store import Store

    store = Store(path)
    return {run["id"]: (run["kind"], run["status"], len(store.cells(run["id"], with_details=False))
                        if run["kind"] == "grid" else None) for run in store.list_runs()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a probe counts as a hang")
    parser.add_argument("--only", default="issue,options,links", help="issue | options | links, comma-separated")
    args = parser.parse_args(argv)
    groups = args.only.split(",")
    sys.path.insert(0, str(ROOT))
    workspace = _make_workspace()
    worker = Worker(workspace)
    start = time.perf_counter()

    # A store with a few runs before the probes (the one grid probes commit to, and the worker's
    # default); every one of them must be there, the same, after the probes.
    for setup in (GRID + ["--mode", "lstsq", "--db", "store.sqlite3", "--json", "-"],
                  GRID + ["--db", "store.sqlite3", "--json", "-", "--control", "random-both"],
                  GRID + ["--mode", "lstsq", "--db", "store.sqlite3", "--json", "-", "--sender-layers", "layer2.0"]):
        result = worker.run(("cli", setup), 300)
        assert result["outcome"] == "ran fine", (setup, result)
    before = _store_contents(workspace / "store.sqlite3")

    makers = {"issue": lambda: issue_probes(workspace), "options": option_probes, "links": link_probes}
    probes = [(group, name, probe) for group in groups for name, probe in makers[group]()]
    counts: dict[str, Counter] = {}
    problems = []
    for group, name, probe in probes:
        result = worker.run(probe, args.timeout)
        counts.setdefault(group, Counter())[result["outcome"]] += 1
        if result["outcome"] in ("traceback", "hang"):
            problems.append(f"{result['outcome']}: {name} -> {result['detail']}")
    worker.stop(politely=True)
    after = _store_contents(workspace / "store.sqlite3")
    shutil.rmtree(workspace.parent.parent, ignore_errors=True)  # its own copy of the datasets, 70 MB
    lost = sum(1 for run_id, seen in before.items() if after.get(run_id) != seen)

    total = sum(counts.values(), Counter())
    print(f"\n{'probes':<10} {'run':>5} {'clean refusals':>15} {'ran fine':>9} {'tracebacks':>11} {'hangs':>6}")
    for group, c in [*counts.items(), ("all", total)]:
        print(f"{group:<10} {sum(c.values()):>5} {c['clean refusal']:>15} {c['ran fine']:>9} {c['traceback']:>11} "
              f"{c['hang']:>6}")
    print(f"results lost: {lost} of the {len(before)} runs stored before the probes")
    for problem in problems:
        print(problem)
    import torch

    from bench._util import emit

    return emit("adversarial_probes", torch.device("cpu"), probes=sum(total.values()),
                clean_refusals=total["clean refusal"], ran_fine=total["ran fine"], tracebacks=total["traceback"],
                hangs=total["hang"], results_lost=lost, runs_before=len(before),
                by_group={g: dict(c) for g, c in counts.items()}, timeout_s=args.timeout,
                seconds=round(time.perf_counter() - start, 1), problems=problems[:20])


if __name__ == "__main__":
    main()
