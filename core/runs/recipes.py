"""The recipes a grid is trained with, named once for the Stitching page, the Lesson, the CLI
(``grid --recipe NAME``) and the benchmarks: the same name gives the same settings, and so the
same stored run, wherever it is asked for.

A recipe says *how* stitches are fitted; a budget says *on how many images*. Fields a recipe
leaves out keep :class:`core.engine.results.GridConfig`'s defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.engine.results import GridConfig

__all__ = ["Recipe", "Budget", "RECIPES", "BUDGETS", "RECIPE_SETTINGS", "BUDGET_SETTINGS", "grid_config", "recipe_of",
           "made_alike"]

# The GridConfig fields a recipe sets, and those a budget sets: two grids with equal values here
# were made the same way.
RECIPE_SETTINGS = ("mode", "epochs", "lr", "momentum", "batch_size", "weight_decay", "precondition", "lr_schedule")
BUDGET_SETTINGS = ("train_limit", "eval_limit")


@dataclass(frozen=True)
class Recipe:
    key: str  # what the CLI and URLs-to-come name it by
    label: str  # what the page shows (and, bound to the URL, what a shared link holds)
    settings: dict
    why: str
    budget: str = "full"  # the CLI's budget for it when --budget is not given
    # Its measured sanity check (Bansal et al.: two seeds of one network stitched at matching
    # layers), in words, for the page to put beside a grid made with it; "" where none was measured.
    seed_check: str = ""


@dataclass(frozen=True)
class Budget:
    key: str
    label: str
    settings: dict


RECIPES = {r.key: r for r in (  # the first is the Stitching page's default
    # The CPU recipe of issue 17, chosen on R2222's two seeds and judged on three other zoo pairs
    # (BENCHMARKS.md, "Quick recipe frontier"): the preconditioner lets one learning rate suit every
    # layer (core.engine.precondition), the decay to 0 settles the last steps, and weight decay goes
    # (it shrank the stitch's output every step: 0.01 cost layer2.1 of R2222 0.007, 0.1 cost 0.12).
    Recipe("quick", "Quick trained (least squares + 1 epoch, preconditioned)",
           {"mode": "lstsq+train", "epochs": 1.0, "lr": 0.08, "momentum": 0.9, "batch_size": 32,
            "weight_decay": 0.0, "precondition": True, "lr_schedule": "linear"},
           "least squares, then one epoch of task loss with each stitch's step scaled by its input's spread, "
           "so one learning rate suits every layer: about a minute for the default pair on a 2-core CPU, and "
           "two seeds of a zoo network stitch within 0.03 of the receiver at every layer", budget="quick",
           seed_check="passed: two seeds stitched at matching layers come within 0.024 (R1111) and 0.029 "
                      "(R2222) of the receiver at every layer, scored on all 10,000 test images (2,000 training "
                      "images; `python -m bench.recipe_frontier --recipes quick`, 2 CPU cores, 2026-12-01)"),
    Recipe("instant", "Instant (least squares)", {"mode": "lstsq"},
           "least squares to the receiver's own activation: no training, seconds on a CPU; it imitates the "
           "receiver's activation rather than optimising the task, so its picture can differ from a "
           "task-trained grid's",
           seed_check="failed: two seeds stitched at matching layers fall up to 0.18 (R1111, layer2.0) and 0.22 "
                      "(R2222, layer1.1) short of the receiver (Quick budget; `python -m bench.recipe_frontier "
                      "--recipes instant --roles seed`, 2 CPU cores, 2026-12-01), so low cells in its grids can be "
                      "least squares' limits rather than differences between the networks"),
    Recipe("standard", "Standard (least squares + 1 epoch)", {"mode": "lstsq+train", "epochs": 1.0},
           "least squares, then one epoch of task loss from there: converges in one epoch (Csiszárik et al. 2021)"),
    Recipe("paper", "Paper recipe (3 epochs from scratch)",
           {"mode": "train", "epochs": 3.0, "lr": 0.01, "momentum": 0.9, "batch_size": 256, "weight_decay": 0.01},
           "the seed paper's: random start, 3 epochs, SGD momentum 0.9, lr 0.01, batch 256, weight decay 0.01"),
)}

BUDGETS = {b.key: b for b in (
    Budget("quick", "Quick: 2,000 training / 1,000 test images", {"train_limit": 2000, "eval_limit": 1000}),
    Budget("full", "Full: every training and test image", {"train_limit": None, "eval_limit": None}),
)}


def grid_config(sender: str, receiver: str, recipe: str = "instant", budget: str = "quick", **fields) -> dict:
    """A grid's full settings (a :class:`GridConfig` as a dict) from a recipe and a budget, by key
    or label; ``fields`` (layers, control, dataset, any GridConfig field) override both."""
    chosen, size = _pick(RECIPES, recipe, "recipe"), _pick(BUDGETS, budget, "budget")
    config = GridConfig.from_dict({"sender": sender, "receiver": receiver, **chosen.settings, **size.settings,
                                   **fields})
    config.validate()
    return asdict(config)


def recipe_of(config: dict) -> tuple[Recipe | None, Budget | None]:
    """The recipe and budget whose settings a stored grid has (None where none matches: a grid
    made with other settings from the CLI, say)."""
    def matches(settings: dict) -> bool:
        return all(config.get(k) == v for k, v in settings.items())

    defaults = asdict(GridConfig("", ""))
    config = {**defaults, **config}  # a run stored before a setting existed was made with its default
    recipe = next((r for r in RECIPES.values() if matches({**_training_defaults(defaults), **r.settings})), None)
    budget = next((b for b in BUDGETS.values() if matches(b.settings)), None)
    return recipe, budget


def made_alike(a: dict, b: dict, settings: tuple[str, ...] = RECIPE_SETTINGS + BUDGET_SETTINGS) -> bool:
    """Whether two grids' settings agree on ``settings`` (by default: recipe and budget); a setting
    a stored run lacks counts as its default."""
    defaults = asdict(GridConfig("", ""))
    return all({**defaults, **a}[k] == {**defaults, **b}[k] for k in settings)


def _training_defaults(defaults: dict) -> dict:
    return {k: defaults[k] for k in RECIPE_SETTINGS}


def _pick(table: dict, name: str, what: str):
    for item in table.values():
        if name in (item.key, item.label):
            return item
    raise ValueError(f"unknown {what} {name!r}: choose one of {', '.join(table)}")
