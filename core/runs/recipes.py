"""The recipes a grid is trained with, named once for the Stitching page, the Lesson, the CLI
(``grid --recipe NAME``) and the benchmarks: the same name gives the same settings, and so the
same stored run, wherever it is asked for.

A recipe says *how* stitches are fitted; a budget says *on how many images*. Fields a recipe
leaves out keep :class:`core.engine.results.GridConfig`'s defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.engine.results import GridConfig

__all__ = ["Recipe", "Budget", "RECIPES", "BUDGETS", "RECIPE_SETTINGS", "BUDGET_SETTINGS", "grid_config", "recipe_of"]

# The GridConfig fields a recipe sets, and those a budget sets: two grids with equal values here
# were made the same way.
RECIPE_SETTINGS = ("mode", "epochs", "lr", "momentum", "batch_size", "weight_decay")
BUDGET_SETTINGS = ("train_limit", "eval_limit")


@dataclass(frozen=True)
class Recipe:
    key: str  # what the CLI and URLs-to-come name it by
    label: str  # what the page shows (and, bound to the URL, what a shared link holds)
    settings: dict
    why: str


@dataclass(frozen=True)
class Budget:
    key: str
    label: str
    settings: dict


RECIPES = {r.key: r for r in (
    Recipe("instant", "Instant (least squares)", {"mode": "lstsq"},
           "least squares to the receiver's own activation: no training, seconds on a CPU; it imitates the "
           "receiver's activation rather than optimising the task, so its picture can differ from a "
           "task-trained grid's"),
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
    recipe = next((r for r in RECIPES.values() if matches({**_training_defaults(defaults), **r.settings})), None)
    budget = next((b for b in BUDGETS.values() if matches(b.settings)), None)
    return recipe, budget


def _training_defaults(defaults: dict) -> dict:
    return {k: defaults[k] for k in RECIPE_SETTINGS}


def _pick(table: dict, name: str, what: str):
    for item in table.values():
        if name in (item.key, item.label):
            return item
    raise ValueError(f"unknown {what} {name!r}: choose one of {', '.join(table)}")
