"""What the Lesson says about its grids, computed from them.

Every number a sentence quotes, and every word that compares numbers ("higher", "below the
diagonal", "stands out"), is derived here from the grids passed in (``GridResult.to_json()``),
so a rebuilt ``assets/lesson/lesson.json`` cannot make the text lie. Plain functions, no
Streamlit: tests call them on altered grids.
"""

from __future__ import annotations

from core.data.classes import classes
from core.engine.results import depth_region, region_means, relative_depth
from core.runs import recipes, seed_check

# Two numbers closer than this read as "about the same" (grids print two decimals).
SAME = 0.01
# An accuracy gap this large is worth a sentence: a cell this far below both its neighbours, a
# control's first and last rows this far apart.
CLEAR_GAP = 0.2
# Same layer, two seeds of one architecture: a stitch within this of the receiver alone passes the
# sanity check (Bansal et al. 2021 report such stitches close to lossless); the page's threshold.
SANITY_GAP = seed_check.MAX_GAP
REGION_WORDS = {"lower_left": "below the diagonal (sender relatively deeper)",
                "upper_right": "above it (sender relatively shallower)", "diagonal": "on it (as deep)"}
WHERE = {"lower_left": "below the diagonal", "upper_right": "above the diagonal", "diagonal": "on the diagonal"}


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def chance(grid: dict) -> float:
    """Accuracy of guessing: one over the number of classes (the test sets are balanced)."""
    return 1 / len(classes(grid.get("dataset", "fashion-mnist"), 10))


def receiver_alone(grid: dict) -> float | None:
    return grid.get("reference_accuracy") or grid.get("receiver_accuracy")


def cells(grid: dict) -> list[tuple[str, str, float, str]]:
    """``(sender layer, receiver layer, accuracy, region)`` of every scored cell."""
    n_s, n_r = len(grid["sender_layers"]), len(grid["receiver_layers"])
    return [(i, j, value, depth_region(relative_depth(a, n_s), relative_depth(b, n_r)))
            for a, i in enumerate(grid["sender_layers"]) for b, j in enumerate(grid["receiver_layers"])
            if (value := grid["accuracy"][a][b]) is not None]


def value(grid: dict, sender_layer: str, receiver_layer: str) -> float | None:
    if sender_layer not in grid["sender_layers"] or receiver_layer not in grid["receiver_layers"]:
        return None
    return grid["accuracy"][grid["sender_layers"].index(sender_layer)][grid["receiver_layers"].index(receiver_layer)]


def diagonal(grid: dict) -> list[tuple[str, str, float]]:
    """The cells where sender and receiver layer are equally deep in their networks."""
    return [(i, j, v) for i, j, v, region in cells(grid) if region == "diagonal"]


def regions_sentence(grid: dict) -> str:
    """The three regions' mean accuracies, highest first, e.g. "highest below the diagonal (…):
    0.89, then on it (…): 0.83, lowest above it (…): 0.78"; "about as high" for a near tie."""
    means = {k: v for k, v in region_means(grid["accuracy"]).items() if v is not None}
    order = sorted(means, key=means.get, reverse=True)
    parts = []
    for rank, k in enumerate(order):
        word = ("highest" if rank == 0 else "about as high" if means[order[rank - 1]] - means[k] < SAME
                else "lowest" if rank == len(order) - 1 else "then")
        parts.append(f"{word} {REGION_WORDS[k]}: **{fmt(means[k])}**")
    return ", ".join(parts)


def best_cells(grid: dict) -> tuple[int, dict[str, int]]:
    """How many cells the best quarter holds (at least 3), and how many of them lie in each region."""
    ranked = sorted(cells(grid), key=lambda c: c[2], reverse=True)
    top = ranked[:max(3, len(ranked) // 4)]
    return len(top), {k: sum(c[3] == k for c in top) for k in ("lower_left", "diagonal", "upper_right")}


def scale_line(grid: dict) -> str:
    """The two reference points every grid is read against."""
    return f"the receiver alone scores **{fmt(receiver_alone(grid))}**; guessing scores **{fmt(chance(grid))}**"


def recipe_caption(grid: dict) -> str:
    """How a bundled grid was made and its diagonal, shown beside it."""
    recipe, budget = recipes.recipe_of(grid.get("config", {}))
    made = " · ".join(x.label for x in (recipe, budget) if x) or f"mode {grid.get('mode', '?')}"
    line = ", ".join(f"{i} → {j} {fmt(v)}" for i, j, v in diagonal(grid))
    mean = region_means(grid["accuracy"])["diagonal"]
    return (f"{made}. On the diagonal (sender as deep as receiver): {line} (mean {fmt(mean)}). "
            f"Receiver alone {fmt(receiver_alone(grid))}; guessing {fmt(chance(grid))}.")


def sanity_note(seeds: dict) -> str:
    """The two-seed, same-layer sanity check, read from the seeds grid."""
    reference = receiver_alone(seeds)
    same_layer = [(i, v) for i, j, v in diagonal(seeds) if i == j]
    if reference is None or not same_layer:
        return "The task-trained grids here show what the paper's recipe gives on this zoo: a picture, not a proof."
    layer, worst = min(same_layer, key=lambda c: c[1])
    if reference - worst <= SANITY_GAP:
        return (f"Sanity check passed: between two seeds, every same-layer stitch is within {fmt(reference - worst)} "
                f"of the receiver alone ({fmt(reference)}). Still, the task-trained grids here show what the paper's "
                f"recipe gives on this zoo, not a proof.")
    return (f"The task-trained grids here show what the paper's recipe gives on this zoo, not a proof: it fails a "
            f"sanity check. A stitch between two seeds of one network at the same layer should come close to the "
            f"receiver alone, but {layer} → {layer} reaches **{fmt(worst)}** against **{fmt(reference)}**.")


def intro(grid: dict) -> str:
    a, b = grid.get("sender_accuracy"), receiver_alone(grid)
    return (f"Two networks trained on the same clothes pictures score **{fmt(a)}** and **{fmt(b)}** on the test "
            f"set (guessing would score **{fmt(chance(grid))}**). **Do they compute the same things inside?**")


def layer_names(seeds: dict, deeper: dict) -> str:
    """What ``stem`` and ``layerK.b`` are, with the two architectures' blocks and activation shapes."""
    layers, shapes = deeper["receiver_layers"], deeper["receiver_shapes"]
    return (f"**Layer names.** `{layers[0]}`: the first convolution (3 × 3, with batch norm), straight on the image. "
            f"`layerK.b`: residual block b (counting from 0) of stage K. "
            f"{_blocks(seeds['sender'], seeds['sender_layers'])}; {_blocks(deeper['receiver'], layers)}. A layer "
            f"here means its output: the stitch reads the sender's output at layer i and stands in for the "
            f"receiver's output at layer j. Going deeper, the picture shrinks and the channels grow: "
            f"{_shape(shapes[0])} after `{layers[0]}`, {_shape(shapes[-1])} after `{layers[-1]}`.")


def _blocks(model: str, layers: list[str]) -> str:
    """``zoo/resnet_1111-s0 has 1 block per stage (layer1.0 … layer4.0)``, counted from layer names."""
    stages: dict[str, int] = {}
    for name in layers:
        if name.startswith("layer") and "." in name:
            stages[name.split(".")[0]] = stages.get(name.split(".")[0], 0) + 1
    blocks = [layer for layer in layers if layer.split(".")[0] in stages]
    if not blocks:
        return f"{model}: {', '.join(layers)}"
    counts = set(stages.values())
    per_stage = (f"{counts.pop()} block{'s' if max(stages.values()) > 1 else ''} per stage" if len(counts) == 1
                 else " + ".join(str(n) for n in stages.values()) + " blocks")
    return f"{model} has {per_stage} (`{blocks[0]}` … `{blocks[-1]}`)"


def _shape(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} channels of {shape[1]} × {shape[2]}" if len(shape) == 3 else " × ".join(map(str, shape))


def seeds_text(seeds: dict) -> str:
    n, where = best_cells(seeds)
    low = min(diagonal(seeds), key=lambda c: c[2])
    text = (f"Same architecture, different random start ({seeds['sender']} → {seeds['receiver']}). Each square: "
            f"the accuracy of *sender up to layer i → stitch → receiver from layer j*; {scale_line(seeds)}. ")
    if where["lower_left"] > max(where["diagonal"], where["upper_right"]):
        text += "The best stitches come from a deeper sender layer into a shallower receiver layer. "
    text += (f"The {n} best cells: {where['lower_left'] or 'none'} below the diagonal, "
             f"{where['diagonal'] or 'none'} on it, {where['upper_right'] or 'none'} above it. Mean accuracy is "
             f"{regions_sentence(seeds)}. Same layer into same layer does not always work: {low[0]} → {low[1]} "
             f"reaches only **{fmt(low[2])}**.")
    return text


def outlier(grid: dict) -> tuple[str, str, float, list[float], str] | None:
    """The lowest cell if it is far below both its neighbours in its row: (i, j, value, neighbours, region)."""
    i, j, v, region = min(cells(grid), key=lambda c: c[2])
    row = grid["accuracy"][grid["sender_layers"].index(i)]
    b = grid["receiver_layers"].index(j)
    neighbours = [row[k] for k in (b - 1, b + 1) if 0 <= k < len(row) and row[k] is not None]
    if neighbours and all(n - v >= CLEAR_GAP for n in neighbours):
        return i, j, v, neighbours, region
    return None


def deeper_text(deeper: dict) -> str:
    means = region_means(deeper["accuracy"])
    lower, upper = means["lower_left"], means["upper_right"]
    text = (f"Now the receiver is deeper: {_blocks(deeper['receiver'], deeper['receiver_layers'])}, so the grid is "
            f"{len(deeper['sender_layers'])} × {len(deeper['receiver_layers'])}. The dashed line is where the "
            f"sender's layer is as far through its network as the receiver's. Mean accuracy is "
            f"{regions_sentence(deeper)}; {scale_line(deeper)}. ")
    if lower is None or upper is None:
        return text
    if lower - upper >= SAME:
        text += (f"A later sender layer stitches into an earlier receiver layer better than the reverse, as the "
                 f"seed paper (Hernandez et al. 2023) found; but the reverse works too, {fmt(lower - upper)} lower "
                 f"on average, not a failure.")
    else:
        text += ("Unlike the seed paper (Hernandez et al. 2023), a later sender layer does not stitch into an "
                 "earlier receiver layer better than the reverse here.")
    return text


def outlier_text(deeper: dict, lstsq: dict | None) -> str:
    """The sentence about the grid's outlier, or ""."""
    found = outlier(deeper)
    if found is None:
        return ""
    i, j, v, neighbours, region = found
    text = (f"One cell stands out: {i} → {j} at **{fmt(v)}**, while the cells beside it reach "
            f"{' and '.join(fmt(n) for n in neighbours)}. ")
    imitated = value(lstsq, i, j) if lstsq else None
    if imitated is not None and imitated - v >= CLEAR_GAP:
        text += (f"A least-squares stitch at the same cell reaches {fmt(imitated)} (step 6), so these layers can be "
                 f"stitched: this one training run, from one random start, fell short. ")
    rest = [c[2] for c in cells(deeper) if c[3] == region and (c[0], c[1]) != (i, j)]
    if rest:
        text += f"Without it the mean {WHERE[region]} is {fmt(sum(rest) / len(rest))}."
    return text


def controls_text(grids: dict) -> str:
    """The four means of step 4 and what the controls' rows and columns say."""
    real, sender, receiver, both = (grids[k] for k in ("deeper", "deeper_random_sender", "deeper_random_receiver",
                                                        "deeper_random_both"))
    means = [mean_accuracy(g) for g in (real, sender, receiver, both)]
    text = (f"Mean accuracy: real networks **{fmt(means[0])}**, random sender **{fmt(means[1])}**, random receiver "
            f"**{fmt(means[2])}**, both random **{fmt(means[3])}**; guessing **{fmt(chance(real))}**.")
    first_row, last_row = _row_mean(sender, 0), _row_mean(sender, -1)
    if first_row - last_row >= CLEAR_GAP:
        text += (f" With a random sender, stitches from its `{sender['sender_layers'][0]}` still reach "
                 f"{fmt(first_row)} on average: a random early layer keeps most of the picture and the trained "
                 f"receiver does the rest; from its `{sender['sender_layers'][-1]}` only {fmt(last_row)}.")
    first_col, last_col = _column_mean(receiver, 0), _column_mean(receiver, -1)
    if last_col - first_col >= CLEAR_GAP:
        text += (f" With a random receiver, stitches into its last layer `{receiver['receiver_layers'][-1]}` reach "
                 f"{fmt(last_col)} on average (into `{receiver['receiver_layers'][0]}`: {fmt(first_col)}): there the "
                 f"trained stitch itself does the classifying.")
    return text + " A high cell means little until the same cell in the controls is lower."


def mean_accuracy(grid: dict) -> float | None:
    values = [c[2] for c in cells(grid)]
    return sum(values) / len(values) if values else None


def _row_mean(grid: dict, row: int) -> float:
    values = [v for v in grid["accuracy"][row] if v is not None]
    return sum(values) / len(values) if values else 0.0


def _column_mean(grid: dict, column: int) -> float:
    values = [row[column] for row in grid["accuracy"] if row[column] is not None]
    return sum(values) / len(values) if values else 0.0


def colour_word(depth_gap: float) -> str:
    """The agreement scatter's colour (RdBu centred on 0) in words."""
    return "white" if abs(depth_gap) < 1e-9 else "blue" if depth_gap > 0 else "red"


def example_point(points: list[dict]) -> dict | None:
    """The point to explain: the cell that stitches best among those whose CKA is below the median
    (the scatter's most telling kind: usable, yet represented differently)."""
    if not points:
        return None
    ckas = sorted(p["cka"] for p in points)
    median = ckas[len(ckas) // 2]
    low = [p for p in points if p["cka"] < median] or points
    return max(low, key=lambda p: p["accuracy"])


def scatter_text(points: list[dict], rho: float | None, grid: dict) -> str:
    text = ("CKA measures whether two layers *represent* the test images alike (1: the same up to rotation and "
            "scale), with no training at all. In the scatter each dot is one cell of step 3's grid: across, the "
            "CKA of sender layer i and receiver layer j; up, the cell's stitched accuracy "
            f"({scale_line(grid)}). Its colour is how much deeper the sender's layer is than the receiver's, "
            "relative to their networks: blue below the diagonal (sender deeper), red above it, white on it.")
    point = example_point(points)
    if point is not None:
        i, j = point["cell"].split(" → ")
        depth_i = relative_depth(grid["sender_layers"].index(i), len(grid["sender_layers"]))
        depth_j = relative_depth(grid["receiver_layers"].index(j), len(grid["receiver_layers"]))
        colour = colour_word(depth_i - depth_j)
        why = ("both layers are as far through their networks" if colour == "white" else
               f"`{i}` is {depth_i:.0%} of the way through the sender, `{j}` {depth_j:.0%} through the receiver")
        text += (f" For example, the marked dot is {point['cell']}: CKA **{fmt(point['cka'])}**, accuracy "
                 f"**{fmt(point['accuracy'])}**; it is {colour} because {why}.")
    if rho is not None:
        text += (f" Across the grid, CKA and accuracy rank the cells with a Spearman correlation of **{fmt(rho)}**: "
                 + ("hardly related." if abs(rho) < 0.3 else "related, but not the same." if abs(rho) < 0.8
                    else "closely related."))
    return text


def lstsq_text(lstsq: dict, trained: dict) -> str:
    ls, tr = region_means(lstsq["accuracy"]), region_means(trained["accuracy"])
    text = (f"A *least-squares* stitch is fitted to **imitate** the receiver's own activation at layer j (no task "
            f"training); left, step 3's task-trained grid, right, this one; {scale_line(trained)}. On the diagonal "
            f"the imitation reaches **{fmt(ls['diagonal'])}** (task-trained: **{fmt(tr['diagonal'])}**); below it "
            f"**{fmt(ls['lower_left'])}** (task-trained: **{fmt(tr['lower_left'])}**).")
    if None not in (ls["lower_left"], tr["lower_left"]) and tr["lower_left"] - ls["lower_left"] >= 2 * SAME:
        text += (" Where the sender is deeper, imitating the receiver works less well than training for the task: "
                 "the trained stitch found *something else that works*. The seed paper's warning: high stitching "
                 "accuracy alone does not prove the two layers represent the same thing.")
    return text
