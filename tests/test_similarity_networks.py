"""Similarity indices between networks' layers (model_similarity) and the torch-free catalogue of
indices; every test over the registry runs on whatever ``MEASURES`` holds."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from core.data.datasets import load_dataset
from core.engine.fused import engine_prefix
from core.engine.layers import resolve_layer
from core.errors import Cancelled
from core.similarity import catalogue
from core.similarity import networks as similarity_networks
from core.similarity.measures import MEASURES, Measure
from core.similarity.networks import model_similarity

LAYERS_A, LAYERS_B = ["layer2.0", "layer4.0"], ["layer3.0"]
PER_IMAGE = 4 * (32 * 16 * 16 + 128 * 4 * 4 + 64 * 8 * 8)  # bytes of features of one image at those layers
KNOWN = ", ".join(MEASURES)


@pytest.fixture
def probe(monkeypatch):
    """A measure that records the features it is given (and returns zeros), registered for one test."""
    seen = []

    def compute(feats_a, feats_b, names_a=None, names_b=None):
        seen.append((feats_a, feats_b, names_a, names_b))
        return torch.zeros(len(feats_a), len(feats_b), dtype=torch.float64)

    measure = Measure("probe", "Probe", True, "records its inputs", compute=compute)
    monkeypatch.setitem(MEASURES, "probe", measure)
    monkeypatch.setitem(catalogue.CATALOGUE, "probe", measure)
    return seen


@pytest.fixture(scope="module")
def every_measure(r1111_pair):
    """Every registered index on 250 images, in batches of 100, 100 and 50."""
    a, b = r1111_pair
    return model_similarity(a, b, list(MEASURES), LAYERS_A, LAYERS_B, limit=250, batch_size=100)


@pytest.fixture(scope="module")
def by_hand(r1111_pair):
    a, b = r1111_pair
    return _features_by_hand(a, LAYERS_A), _features_by_hand(b, LAYERS_B)


def _features_by_hand(net, names, limit=250, batch_size=100):
    """The engine's activations at ``names``, batch by batch as model_similarity runs them."""
    images = load_dataset("fashion-mnist", "test", limit).images.float() / 255
    prefix = engine_prefix(net, [resolve_layer(net, name) for name in names])
    with torch.no_grad():
        outs = [prefix(net.prepare(images[k:k + batch_size])) for k in range(0, limit, batch_size)]
    return [torch.cat([out[i] for out in outs]).contiguous() for i in range(len(names))]


def test_the_features_are_every_image_at_every_layer_float32_on_the_cpu(r1111_pair, probe, by_hand):
    a, b = r1111_pair
    result = model_similarity(a, b, ["probe"], LAYERS_A, LAYERS_B, limit=250, batch_size=100)
    ((feats_a, feats_b, names_a, names_b),) = probe
    for ours, theirs in zip(feats_a + feats_b, by_hand[0] + by_hand[1]):
        assert ours.dtype == torch.float32 and ours.device.type == "cpu" and ours.is_contiguous()
        assert torch.equal(ours, theirs)
    assert names_a == ["'layer2.0' of zoo/resnet_1111-s0", "'layer4.0' of zoo/resnet_1111-s0"]
    assert names_b == ["'layer3.0' of zoo/resnet_1111-s1"]
    assert (result.n_examples, result.feature_bytes) == (250, 250 * PER_IMAGE)


def test_one_network_on_both_sides_computes_a_shared_layer_once(r1111_pair, probe):
    net = r1111_pair[0]
    model_similarity(net, net, ["probe"], ["layer2.0", "layer3.0"], ["layer3.0"], limit=60)
    ((feats_a, feats_b, _, _),) = probe
    assert feats_b[0] is feats_a[1]


@pytest.mark.parametrize("name", list(MEASURES))
def test_every_index_is_its_registry_matrix_of_the_collected_features(every_measure, by_hand, name):
    measure = every_measure.measures[name]
    expected = MEASURES[name].matrix(*by_hand)
    assert torch.allclose(torch.tensor(measure["matrix"], dtype=torch.float64), expected, atol=1e-9, rtol=0)
    assert (measure["label"], measure["higher_is_similar"]) == (MEASURES[name].label, MEASURES[name].higher_is_similar)
    assert measure["seconds"] >= 0 and all(math.isfinite(v) for row in measure["matrix"] for v in row)


def test_the_result_is_json_with_what_a_figure_rests_on(every_measure):
    data = json.loads(json.dumps(every_measure.to_json(), allow_nan=False))
    assert list(data["measures"]) == list(MEASURES)
    assert (data["layers_a"], data["layers_b"], data["n_examples"]) == (LAYERS_A, LAYERS_B, 250)
    assert data["dataset"] == "fashion-mnist" and data["feature_bytes"] == 250 * PER_IMAGE
    assert data["features_seconds"] <= data["seconds"]


def test_an_image_count_over_the_budget_is_refused_before_any_image_runs(r1111_pair, monkeypatch):
    a, b = r1111_pair
    budget = 10 * PER_IMAGE
    assert model_similarity(a, b, ["linear-cka"], LAYERS_A, LAYERS_B, limit=10, budget=budget).n_examples == 10
    monkeypatch.setattr(similarity_networks, "engine_prefix", lambda *a, **k: pytest.fail("a network ran"))
    with pytest.raises(ValueError, match=r"^11 images of these layers need 616 KiB of features held at once, more "
                                         r"than the 560 KiB budget; use at most 10 images, or fewer layers$"):
        model_similarity(a, b, ["linear-cka"], LAYERS_A, LAYERS_B, limit=11, budget=budget)


def test_the_budget_counts_a_layer_shared_by_one_network_once(r1111_pair):
    net, other = r1111_pair
    budget = 20 * 4 * 32 * 16 * 16  # 20 images of one layer2.0
    assert model_similarity(net, net, ["linear-cka"], ["layer2.0"], ["layer2.0"], limit=20, budget=budget).n_examples
    with pytest.raises(ValueError, match="use at most 10 images"):  # two networks: two tensors
        model_similarity(net, other, ["linear-cka"], ["layer2.0"], ["layer2.0"], limit=20, budget=budget)


def test_cancel_stops_between_batches_and_between_indices(r1111_pair, probe):
    a, b = r1111_pair
    asked = []
    with pytest.raises(Cancelled):  # asked before each batch: the second batch never runs
        model_similarity(a, b, ["probe"], LAYERS_A, LAYERS_B, limit=250, batch_size=100,
                         cancel=lambda: asked.append(1) or len(asked) > 1)
    assert len(asked) == 2 and not probe
    with pytest.raises(Cancelled):  # asked before each index: the first ran, the second did not
        model_similarity(a, b, ["probe", "linear-cka"], LAYERS_A, LAYERS_B, limit=50, cancel=lambda: len(probe) > 0)
    assert len(probe) == 1


def test_progress_reports_batches_then_indices(r1111_pair, probe):
    a, b = r1111_pair
    events = []
    model_similarity(a, b, ["probe", "linear-cka"], LAYERS_A, LAYERS_B, limit=250, batch_size=100,
                     progress=events.append)
    assert [e.message for e in events] == ["Features: batch 1/3 (100 images)", "Features: batch 2/3 (200 images)",
                                           "Features: batch 3/3 (250 images)", "Probe (1/2)", "Linear CKA (2/2)",
                                           "2 similarity measure(s) on 250 images"]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_input_is_one_clear_line(r1111_pair, monkeypatch):
    a, b = r1111_pair
    with pytest.raises(ValueError, match=rf"^unknown similarity measure 'nope': choose from {re.escape(KNOWN)}$"):
        model_similarity(a, b, ["linear-cka", "nope"], limit=10)
    with pytest.raises(TypeError, match=r"not a string"):
        model_similarity(a, b, "linear-cka", limit=10)
    with pytest.raises(ValueError, match="unknown layer 'layer9' of zoo/resnet_1111-s0"):
        model_similarity(a, b, ["linear-cka"], ["layer9"], limit=10)

    def undefined(feats_a, feats_b, names_a=None, names_b=None):
        return torch.full((len(feats_a), len(feats_b)), float("nan"), dtype=torch.float64)

    never = Measure("nan", "Never defined", True, "NaN everywhere", compute=undefined)
    monkeypatch.setitem(MEASURES, "nan", never)
    monkeypatch.setitem(catalogue.CATALOGUE, "nan", never)
    with pytest.raises(ValueError, match=r"^Never defined is undefined for 'layer2.0' of zoo/resnet_1111-s0 vs "
                                         r"'layer3.0' of zoo/resnet_1111-s1 \(it came out nan\)"):
        model_similarity(a, b, ["nan"], LAYERS_A, LAYERS_B, limit=10)


def test_an_index_s_own_error_is_prefixed_with_its_name(r1111_pair):
    net = r1111_pair[0]
    with pytest.raises(ValueError, match=r"^Linear CKA: CKA needs at least 2 examples, got 1"):
        model_similarity(net, net, ["linear-cka"], ["stem"], ["stem"], limit=1)


# --- the catalogue, without torch ------------------------------------------------------------------
def test_the_catalogue_the_dashboard_reads_is_the_registry():
    """What the dashboard's process (no torch) reads names every index the registry computes, alike."""
    listed = catalogue.measure_catalogue()
    assert list(listed) == list(MEASURES)
    for name, measure in MEASURES.items():
        assert listed[name] == {"label": measure.label, "higher_is_similar": measure.higher_is_similar,
                                "summary": measure.summary}
        assert measure.compute is not None


def test_measure_names_are_checked_in_order_once_each():
    assert catalogue.check_measure_names(["rbf-cka", "linear-cka", "rbf-cka"]) == ["rbf-cka", "linear-cka"]
    with pytest.raises(ValueError, match=rf"^name at least one similarity measure: {re.escape(KNOWN)}$"):
        catalogue.check_measure_names([])


def test_feature_bytes_and_the_most_images_that_fit():
    shapes = [(32, 16, 16), (128, 4, 4)], [(64, 8, 8)]
    assert catalogue.feature_bytes(3, *shapes) == 3 * PER_IMAGE
    assert catalogue.most_images(*shapes, budget=10 * PER_IMAGE + PER_IMAGE - 1) == 10
    assert catalogue.check_feature_budget(10, *shapes, budget=10 * PER_IMAGE) == 10 * PER_IMAGE
