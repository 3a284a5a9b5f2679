"""``python -m core ...``: the engine, headless, with JSON out.

Every user error ends as one line on stderr (``error: ...``) and exit code 2; a traceback
means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path

from core.cli_checks import UserError, check_before_work
from core.errors import DeviceUnavailable

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UserError(f"{message} (see: {self.prog} --help)")


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError("an empty layer list was given; pass names separated by commas, e.g. stem,layer1.0")
    return items


def _write_json(data, path: str | None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if path in (None, "-"):
        print(text)
        return
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    except OSError as exc:  # checked before the work, but a disk can fill up since: keep the result
        print(text)
        raise UserError(f"could not write {str(out)!r} ({exc.strerror or exc}); the result was printed to "
                        f"stdout instead") from None
    print(f"wrote {out}", file=sys.stderr)


# A progress line is redrawn in place (no newline) until the work ends; an error in between must
# start a line of its own, not trail the progress bar.
_progress_line = {"open": False}


def _printable(text: str) -> str:
    """``text`` with control and format characters (a newline, an ANSI escape, a right-to-left
    override) written as escapes: a name the user typed is shown, never obeyed by the terminal."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch
                   for ch in text)


def _progress_printer(quiet: bool):
    if quiet:
        return None
    last = {"line": ""}

    def show(event):
        eta = f", ~{event.eta:.0f}s left" if event.eta is not None else ""
        line = f"\r[{event.fraction * 100:5.1f}%] {_printable(event.message)}{eta}"
        if line != last["line"]:
            print(line.ljust(78), end="", file=sys.stderr, flush=True)
            last["line"] = line
            _progress_line["open"] = True
        if event.stage == "done" or event.fraction >= 1:
            print(file=sys.stderr)
            _progress_line["open"] = False
    return show


# --- commands ------------------------------------------------------------------------------------
def cmd_models(args) -> None:
    from core.models.network import list_models

    rows = list_models()
    if args.json:
        _write_json(rows, args.json)
        return
    print(f"{'name':<24} {'architecture':<42} {'params':>9} {'accuracy':>8} {'MB':>5}")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        print(f"{r['name']:<24} {r['architecture']:<42} {r['parameters'] or 0:>9,} {acc:>8} {r['size_mb']:>5.2f}")
    print("\nAlso: torchvision/ARCH (ImageNet weights when online), file:PATH (a checkpoint), "
          "NAME@random[:SEED] (random-initialised copy).")


def cmd_layers(args) -> None:
    from core.engine.layers import list_layers
    from core.models.network import load_model

    net = load_model(args.model)
    layers = list_layers(net, all_nodes=args.all)
    if args.json:
        _write_json([{"name": lay.name, "node": lay.node, "shape": list(lay.shape), "kind": lay.kind}
                     for lay in layers], args.json)
        return
    for lay in layers:
        print(f"{lay.name:<36} {str(tuple(lay.shape)):<18} {lay.kind}")


def grid_settings(args) -> dict:
    """The grid's settings: a recipe and budget (``--recipe``/``--budget``, as the page offers
    them), then every flag given explicitly on top."""
    from core.runs.recipes import RECIPES, grid_config

    explicit = {k: v for k, v in {
        "sender_layers": _csv(args.sender_layers), "receiver_layers": _csv(args.receiver_layers),
        "mode": args.mode, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "train_limit": args.train_limit, "eval_limit": args.eval_limit,
        "max_stitch_params": args.max_stitch_params}.items() if v is not None}
    fields = {"control": args.control, "dataset": args.dataset, "seed": args.seed, "bn_before": args.bn_before,
              "bn_after": args.bn_after, **explicit}
    if args.recipe is None and args.budget is not None:
        raise UserError("--budget goes with --recipe (e.g. --recipe instant --budget quick)")
    if args.recipe is None:
        from dataclasses import asdict

        from core.engine.results import GridConfig

        config = GridConfig.from_dict({"sender": args.sender, "receiver": args.receiver, **fields})
        config.validate()
        return asdict(config)
    budget = args.budget or next((r.budget for r in RECIPES.values() if args.recipe in (r.key, r.label)), "full")
    return grid_config(args.sender, args.receiver, args.recipe, budget, **fields)


def cmd_grid(args) -> None:
    from core.engine.grid import run_grid
    from core.runs.store import Store

    config = grid_settings(args)
    store = Store(args.db) if args.db else None
    result = run_grid(config, store=store, device=args.device, progress=_progress_printer(args.quiet),
                      reuse=not args.no_reuse)
    _write_json(result.to_json(), args.json)


def cmd_cka(args) -> None:
    from core.similarity.networks import model_cka

    progress = _progress_printer(args.quiet)
    result = model_cka(args.model_a, args.model_b, layers_a=_csv(args.layers_a), layers_b=_csv(args.layers_b),
                       dataset=args.dataset, limit=args.limit, batch_size=args.batch_size, kernel=args.kernel,
                       sigma=args.sigma, device=args.device, progress=progress)
    _write_json(result.to_json(), args.json)


def cmd_similarity(args) -> None:
    from core.similarity.measures import check_measures

    # Checked before any model loads: a wrong name costs nothing.
    measures = check_measures([name.strip() for name in args.measure.split(",") if name.strip()])
    settings = {"layers_a": _csv(args.layers_a), "layers_b": _csv(args.layers_b), "limit": args.limit,
                "dataset": args.dataset}
    progress = _progress_printer(args.quiet)
    if args.db is None:
        from core.similarity.networks import model_similarity

        result = model_similarity(args.model_a, args.model_b, measures, device=args.device, progress=progress,
                                  **settings).to_json()
    else:  # one stored run per measure, as the Similarity page stores them: each finds what the other stored
        from core import runs
        from core.runs.similarity_runs import merge_results, run_similarity, similarity_configs
        from core.runs.store import Store

        store = Store(args.db)
        run_ids = run_similarity(similarity_configs(args.model_a, args.model_b, measures, **settings), store,
                                 args.device, progress)
        result = merge_results([runs.load(store, run_id) for run_id in run_ids], measures)
    _write_json(result, args.json)


def cmd_sweep(args) -> None:
    from core.runs.store import Store
    from core.runs.sweep import SweepConfig, paper_effect, run_sweep, sweep_summary

    config = SweepConfig(models=_csv(args.models), pairs=args.pairs, controls=_csv(args.controls), mode=args.mode,
                         epochs=args.epochs, train_limit=args.train_limit, eval_limit=args.eval_limit)

    def show(event):
        eta = f", ~{event.eta:.0f}s left" if event.eta is not None else ""
        counts = event.counts
        failed = f", {counts['failed']} failed" if counts["failed"] else ""
        line = f"[{counts['done']}/{counts['total']} grids{failed}{eta}] {_printable(event.message)}"
        end = "\n" if event.stage in ("start", "grid", "done") else ""
        print("\r" + (line if end else line[:79]).ljust(79), end=end, file=sys.stderr, flush=True)

    store = Store(args.db)
    try:
        status = run_sweep(config, store, executor=args.executor, device=args.device, name=args.name,
                           ray_address=args.ray_address, progress=None if args.quiet else show)
    except KeyboardInterrupt:
        print("\nsweep interrupted; rerun the same command to resume it", file=sys.stderr)
        raise
    effect = paper_effect(sweep_summary(store, status["run_id"]))
    if args.json:
        _write_json({**status, "effect": effect}, args.json)
        return
    print(f"sweep {status['name']} ({status['run_id']}): {status['done']}/{status['total']} grids done, "
          f"{status['failed']} failed")
    for control, regions in effect.items():
        means = ", ".join(f"{region} {r['mean_accuracy']:.3f}" for region, r in regions.items()
                          if r["mean_accuracy"] is not None)
        print(f"  {control}: {means}")


def cmd_zoo_train(args) -> None:
    from core.models.zoo_train import train_zoo

    train_zoo(preset=args.preset, only=_csv(args.only), device=args.device, epochs=args.epochs,
              train_limit=args.train_limit, out_dir=Path(args.out) if args.out else None, dataset=args.dataset)


def cmd_lesson_build(args) -> None:
    from core.runs.lesson import build_lesson

    build_lesson(args.device, Path(args.out) if args.out else None, args.train_limit, args.eval_limit,
                 log=lambda line: print(line, file=sys.stderr))


def cmd_worker(args) -> None:
    from core.runs.service import serve

    serve(args.db, idle_exit=args.idle_exit if args.idle_exit > 0 else None)


def cmd_runs(args) -> None:
    from core.runs.store import Store

    store = Store(args.db)
    if args.kind is not None:
        from core.runs.service import KINDS

        kinds = sorted({*KINDS, "sweep", *(r["kind"] for r in store.list_runs())})  # a store may hold older kinds
        if args.kind not in kinds:
            raise UserError(f"unknown run kind {args.kind!r}: choose one of {', '.join(kinds)}")
    runs = store.list_runs(kind=args.kind)
    if args.json:
        _write_json(runs, args.json)
        return
    for r in runs:
        cfg = r["config"]
        pair = f"{cfg.get('sender', cfg.get('model_a', ''))} -> {cfg.get('receiver', cfg.get('model_b', ''))}"
        print(f"{r['id']}  {r['kind']:<6} {r['status']:<10} {pair}  {r['name'] or ''}")


def cmd_store_recover(args) -> None:
    from core.runs.recovery import recover

    print(recover(Path(args.path).expanduser(), Path(args.to).expanduser() if args.to else None).summary())


def cmd_attribute(args) -> None:
    from core.attribution.methods import METHODS, attribute, attribution_figure, compare
    from core.data.datasets import load_dataset
    from core.device import resolve_device
    from core.engine.stitched import load_stitched
    from core.models.network import load_model
    from core.runs.store import Store

    if args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r}: choose one of {', '.join(METHODS)}")
    if args.stitch:
        parts = args.stitch.split(":")
        if len(parts) != 3 or not all(parts):
            raise UserError(f"--stitch takes RUN_ID:SENDER_LAYER:RECEIVER_LAYER (e.g. 3f2a9c1b0d4e:layer3.0:layer2.0; "
                            f"python -m core runs lists runs), got {args.stitch!r}")
        stitched = load_stitched(Store(args.db), *parts, device=args.device)
        run_models = (stitched.sender.name, stitched.receiver.name, stitched.run["sender"], stitched.run["receiver"])
        if args.model not in ("-", *run_models):
            raise UserError(f"model {args.model!r} is not part of run {parts[0]} ({' -> '.join(run_models[2:])}); "
                            f"give '-' to use the run's own models")
        layers = dict(item.split("=", 1) for item in _csv(args.layer) or [] if "=" in item)
        if args.layer and len(layers) != len(_csv(args.layer)):
            raise UserError(f"with --stitch, --layer takes KEY=NAME pairs for sender, receiver and stitched "
                            f"(e.g. sender=layer2.0,stitched=stitch), got {args.layer!r}")
        dataset = args.dataset or stitched.dataset
    else:
        if args.model == "-":
            raise UserError("MODEL '-' means 'the run's models' and needs --stitch RUN_ID:SENDER_LAYER:RECEIVER_LAYER")
        net = load_model(args.model, resolve_device(args.device))
        dataset = args.dataset or "fashion-mnist"
    test = load_dataset(dataset, "test")
    if not 0 <= args.index < len(test):
        raise UserError(f"--index {args.index} is out of range: the {dataset} test split has images 0..{len(test) - 1}")
    image, label = test.images[args.index:args.index + 1].float() / 255, int(test.labels[args.index])
    if args.stitch:
        results = compare(stitched.sender, stitched.receiver, stitched, image, args.target, args.method,
                          seed=args.seed, layers=layers)
    else:
        results = {"model": attribute(net, image, args.target, args.method, args.layer, seed=args.seed)}
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    attribution_figure(image[0], results, test.info.classes, label).savefig(png)
    print(f"wrote {png}", file=sys.stderr)
    if args.json:
        classes = test.info.classes

        def describe(a):
            k = int(a.predictions[0])
            return {"name": a.name, "prediction": k, "class": classes[k] if k < len(classes) else None,
                    "probability": float(a.probabilities[0, k]), "target": int(a.target[0]), "layer": a.layer,
                    "seconds": round(a.seconds, 3), "display": a.display[0].round(4).tolist()}

        _write_json({"method": args.method, "dataset": dataset, "index": args.index, "label": label,
                     "label_class": classes[label], "networks": {k: describe(a) for k, a in results.items()}},
                    args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="StitchLab engine: stitching grids, CKA and attributions.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list the bundled model zoo")
    p.add_argument("--json", metavar="PATH", help="write the list as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("layers", help="list a model's stitchable layers with shapes")
    p.add_argument("model", help="e.g. zoo/resnet_1111-s0, torchvision/resnet18@random, file:PATH")
    p.add_argument("--all", action="store_true", help="every cut point, not only stem and blocks")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("grid", help="train and score a stitching grid")
    p.add_argument("sender")
    p.add_argument("receiver")
    p.add_argument("--sender-layers", metavar="L1,L2", help="default: stem and every block")
    p.add_argument("--receiver-layers", metavar="L1,L2")
    p.add_argument("--recipe", help="quick | instant | standard | paper: the Stitching page's recipes, the same "
                                    "stored grids (core/runs/recipes.py); the flags below override it")
    p.add_argument("--budget", help="quick | full: the page's image budgets (default with --recipe: quick for "
                                    "the quick recipe, else full)")
    p.add_argument("--mode", help="train | lstsq | lstsq+train (default train)")
    p.add_argument("--control", default="none", help="none | random-sender | random-receiver | random-both")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | cifar10 | folder:PATH")
    p.add_argument("--epochs", type=float, help="default 1")
    p.add_argument("--batch-size", type=int, help="default 256")
    p.add_argument("--lr", type=float, help="default 0.01")
    p.add_argument("--train-limit", type=int, metavar="N", help="use the first N training images")
    p.add_argument("--eval-limit", type=int, metavar="N", help="score on the first N test images")
    p.add_argument("--bn-before", action="store_true", help="BatchNorm before the stitch")
    p.add_argument("--bn-after", action="store_true", help="BatchNorm after the stitch")
    p.add_argument("--max-stitch-params", type=int, default=None, metavar="N",
                   help="pairs whose stitch would need more parameters are 'not stitchable' (default 25M)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", metavar="PATH", help="SQLite store to commit to / reuse from (default: none)")
    p.add_argument("--no-reuse", action="store_true", help="recompute even if the store has this grid")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", metavar="PATH", required=True, help="where to write the result ('-' for stdout)")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("sweep", help="run (or resume) many grids: every pair of the models matched")
    p.add_argument("--models", required=True, metavar="PATTERN[,PATTERN]", help="globs, e.g. 'zoo/resnet_*-s0'")
    p.add_argument("--pairs", default="all", help="all | diagonal | distinct (default all)")
    p.add_argument("--controls", default="none", metavar="C1,C2",
                   help="none,random-sender,random-receiver,random-both (default none)")
    p.add_argument("--mode", default="train", help="train | lstsq | lstsq+train (default train)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--train-limit", type=int, metavar="N", help="use the first N training images")
    p.add_argument("--eval-limit", type=int, metavar="N", help="score on the first N test images")
    p.add_argument("--executor", default="local", help="local | ray (default local)")
    p.add_argument("--ray-address", metavar="ADDRESS", help="a Ray cluster, e.g. HEAD:6379 (default: a local Ray)")
    p.add_argument("--db", metavar="PATH", help="SQLite store (default: $STITCHLAB_DB or the home folder's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--name", required=True, help="the sweep's name in the store")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", metavar="PATH", help="write status and effect as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("cka", help="CKA similarity between every layer of two models")
    p.add_argument("model_a", help="e.g. zoo/resnet_1111-s0")
    p.add_argument("model_b")
    p.add_argument("--layers-a", metavar="L1,L2", help="default: stem and every block (as a grid)")
    p.add_argument("--layers-b", metavar="L1,L2")
    p.add_argument("--kernel", default="linear", help="linear | rbf (default linear)")
    p.add_argument("--sigma", type=float, default=0.8, help="rbf bandwidth as a fraction of the median distance")
    p.add_argument("--batch-size", type=int, default=500, help="minibatch size, at least 4 (default 500)")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N test images (default: all)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | cifar10 | folder:PATH")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", metavar="PATH", required=True, help="where to write the result ('-' for stdout)")
    p.set_defaults(func=cmd_cka)

    p = sub.add_parser("similarity", help="similarity indices (CKA, ...) between every layer of two models")
    p.add_argument("model_a", help="e.g. zoo/resnet_1111-s0")
    p.add_argument("model_b")
    p.add_argument("--measure", required=True, metavar="NAME[,NAME]",
                   help="index names, e.g. linear-cka,rbf-cka (a wrong name lists the known ones)")
    p.add_argument("--layers-a", metavar="L1,L2", help="default: stem and every block (as a grid)")
    p.add_argument("--layers-b", metavar="L1,L2")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N test images (default: all, if their "
                                                          "features fit 4 GiB; the error names the most that do)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | cifar10 | folder:PATH")
    p.add_argument("--device", default="auto", help="where the networks run: auto | cpu | cuda (indices: CPU)")
    p.add_argument("--db", metavar="PATH", help="store each measure as a run here, and reuse stored ones (the "
                                                "Similarity page's runs); default: store nothing")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", metavar="PATH", required=True, help="where to write the result ('-' for stdout)")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("zoo", help="the model zoo: zoo train")
    zsub = p.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser)
    t = zsub.add_parser("train", help="retrain the zoo and rewrite its manifest")
    t.add_argument("--only", metavar="NAME[,NAME]", help="train only these models")
    t.add_argument("--preset", default="default", choices=["default", "paper"])
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--epochs", type=int, help="override the recipe's epochs (quick checks)")
    t.add_argument("--train-limit", type=int, metavar="N", help="train on the first N images (quick checks)")
    t.add_argument("--out", metavar="DIR", help="write weights and manifest here instead of the preset's folder")
    t.add_argument("--dataset", help="fashion-mnist | cifar10 (paper preset: default CIFAR-10 when it can be had)")
    t.set_defaults(func=cmd_zoo_train)

    p = sub.add_parser("lesson", help="the Lesson page's material: lesson build")
    lsub = p.add_subparsers(dest="lesson_command", required=True, parser_class=_Parser)
    t = lsub.add_parser("build", help="compute the lesson's grids and CKA (assets/lesson/lesson.json)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--out", metavar="PATH", help="write here instead of assets/lesson/lesson.json")
    t.add_argument("--train-limit", type=int, metavar="N", help="first N training images (quick checks)")
    t.add_argument("--eval-limit", type=int, metavar="N", help="first N test images (quick checks)")
    t.set_defaults(func=cmd_lesson_build)

    p = sub.add_parser("worker", help="serve the job queue of a store (the dashboard starts this itself)")
    p.add_argument("--db", metavar="PATH", help="the store (default: $STITCHLAB_DB or ~/.cache/stitchlab)")
    p.add_argument("--idle-exit", type=float, default=600, help="exit after this many idle seconds (0: never)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("runs", help="list the runs in a store")
    p.add_argument("--db", metavar="PATH")
    p.add_argument("--kind", help="grid | cka | sweep | ... (an unknown kind is refused with the list)")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("store", help="the results store: store recover")
    ssub = p.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    t = ssub.add_parser("recover", help="copy every readable run and cell of a (damaged) store into a new store")
    t.add_argument("path", help="the damaged store (it is only read, never changed)")
    t.add_argument("--to", metavar="NEW", help="the new store (must not exist; default: NAME.recovered-<time> "
                                               "beside PATH)")
    t.set_defaults(func=cmd_store_recover)
    p = sub.add_parser("attribute", help="attribution maps (captum) of a model, or of a stored stitch and its networks")
    p.add_argument("model", help="a model name, or '-' with --stitch (the run's own models)")
    p.add_argument("--stitch", metavar="RUN_ID:SENDER_LAYER:RECEIVER_LAYER",
                   help="a trained stitch of a stored grid: draw sender, receiver and stitched network side by side")
    p.add_argument("--db", metavar="PATH", help="the store holding the --stitch run (default: the usual one)")
    p.add_argument("--method", default="ig", help="ig | saliency | gradientshap | occlusion | gradcam (default ig)")
    p.add_argument("--index", type=int, default=0, metavar="K", help="test image K of the dataset (default 0)")
    p.add_argument("--target", type=int, metavar="T", help="class to explain (default: the (receiver's) prediction)")
    p.add_argument("--layer", metavar="NAME", help="Grad-CAM layer; with --stitch: sender=NAME,stitched=NAME,...")
    p.add_argument("--dataset", help="fashion-mnist | cifar10 | folder:PATH (default: the run's, else fashion-mnist)")
    p.add_argument("--seed", type=int, default=0, help="GradientShap's noise seed")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--png", metavar="PATH", required=True, help="where to write the figure")
    p.add_argument("--json", metavar="PATH", help="also write predictions and maps as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_attribute)
    return parser


def _user_errors():
    from core.errors import Cancelled
    from core.models.checkpoints import CheckpointError
    from core.models.zoo import ZooError
    from core.runs.store import StoreError

    # Cancelled: a run deleted (in the app) while this command computed it
    return (UserError, ValueError, TypeError, OSError, KeyError, CheckpointError, StoreError, ZooError, Cancelled)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_before_work(args)
        args.func(args)
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _progress_line["open"]:
            print(file=sys.stderr)
            _progress_line["open"] = False
        if isinstance(exc, _user_errors()):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            # The engine's neutral words for a missing GPU, in this command line's terms.
            message = str(message).replace(DeviceUnavailable.FIX, "use --device cpu or auto")
            print(f"error: {_printable(' '.join(str(message).split()))}", file=sys.stderr)
            return 2
        raise
