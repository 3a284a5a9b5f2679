"""``python -m core ...``: the engine, headless, with JSON out.

Every user error ends as one line on stderr (``error: ...``) and exit code 2; a traceback
means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UserError(f"{message} (see: {self.prog} --help)")


class UserError(Exception):
    pass


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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}", file=sys.stderr)


def _progress_printer(quiet: bool):
    if quiet:
        return None
    last = {"line": ""}

    def show(event):
        eta = f", ~{event['eta']:.0f}s left" if event.get("eta") is not None else ""
        line = f"\r[{event['fraction'] * 100:5.1f}%] {event['message']}{eta}"
        if line != last["line"]:
            print(line.ljust(78), end="", file=sys.stderr, flush=True)
            last["line"] = line
        if event["stage"] == "done":
            print(file=sys.stderr)
    return show


# --- commands ------------------------------------------------------------------------------------
def cmd_models(args) -> None:
    from .models import list_models

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
    from .layers import list_layers
    from .models import load_model

    net = load_model(args.model)
    layers = list_layers(net, all_nodes=args.all)
    if args.json:
        _write_json([{"name": lay.name, "node": lay.node, "shape": list(lay.shape), "kind": lay.kind}
                     for lay in layers], args.json)
        return
    for lay in layers:
        print(f"{lay.name:<36} {str(tuple(lay.shape)):<18} {lay.kind}")


def cmd_grid(args) -> None:
    from .grid import GridConfig, run_grid
    from .store import Store

    config = GridConfig(sender=args.sender, receiver=args.receiver, sender_layers=_csv(args.sender_layers),
                        receiver_layers=_csv(args.receiver_layers), mode=args.mode, control=args.control,
                        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        train_limit=args.train_limit, eval_limit=args.eval_limit, seed=args.seed,
                        bn_before=args.bn_before, bn_after=args.bn_after,
                        **({"max_stitch_params": args.max_stitch_params} if args.max_stitch_params else {}))
    store = Store(args.db) if args.db else None
    result = run_grid(config, store=store, device=args.device, progress=_progress_printer(args.quiet),
                      reuse=not args.no_reuse)
    _write_json(result.to_json(), args.json)


def cmd_zoo_train(args) -> None:
    from .zoo_train import train_zoo

    train_zoo(preset=args.preset, only=_csv(args.only), device=args.device, epochs=args.epochs,
              train_limit=args.train_limit, out_dir=Path(args.out) if args.out else None)


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
    p.add_argument("--mode", default="train", help="train | lstsq | lstsq+train (default train)")
    p.add_argument("--control", default="none", help="none | random-sender | random-receiver | random-both")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | cifar10 | folder:PATH")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.01)
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

    p = sub.add_parser("zoo", help="the model zoo: zoo train")
    zsub = p.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser)
    t = zsub.add_parser("train", help="retrain the zoo and rewrite its manifest")
    t.add_argument("--only", metavar="NAME[,NAME]", help="train only these models")
    t.add_argument("--preset", default="default", choices=["default", "paper"])
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--epochs", type=int, help="override the recipe's epochs (quick checks)")
    t.add_argument("--train-limit", type=int, metavar="N", help="train on the first N images (quick checks)")
    t.add_argument("--out", metavar="DIR", help="write weights and manifest here instead of the preset's folder")
    t.set_defaults(func=cmd_zoo_train)
    return parser


def _user_errors():
    from .checkpoints import CheckpointError
    from .store import StoreError
    from .zoo import ZooError

    return (UserError, ValueError, TypeError, FileNotFoundError, KeyError, CheckpointError, StoreError, ZooError)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
            return 2
        raise
