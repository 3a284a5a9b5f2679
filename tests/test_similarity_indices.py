"""The similarity indices besides CKA (core/similarity/{cca,procrustes,rsa,encoding}.py) and the
registry every index is called through: agreement with independent float64 references
(tests/similarity_reference.py) and with published implementations where they install
(requirements-reference.txt: repsim, rsatoolbox, scipy, scikit-learn), answers known by hand,
the invariances each index claims (and the ones it does not), and one-line errors for
degenerate layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.similarity import cca, encoding
from core.similarity.cca import kept_dimensions, pwcca_matrix, svcca_matrix
from core.similarity.cka import cka_matrix
from core.similarity.encoding import encoding_split, linear_encoding_matrix
from core.similarity.measures import MEASURES, TRANSFORMS, check_measures
from core.similarity.procrustes import procrustes_matrix
from core.similarity.rsa import average_ranks, rsa_matrix
from tests import similarity_reference as ref

INDICES = {"svcca": svcca_matrix, "pwcca": pwcca_matrix, "procrustes": procrustes_matrix, "rsa": rsa_matrix,
           "linear-encoding": linear_encoding_matrix}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rotation(p, seed):
    return torch.linalg.qr(torch.randn(p, p, generator=_gen(seed), dtype=torch.float64)).Q


def _layers(n=240, p=8, q=6, seed=0):
    """x (n, p) with a decaying spectrum (99 % of its variance in 4 of its 8 directions), shifted
    away from 0, and y (n, q), a noisy linear function of it; float64."""
    g = _gen(seed)
    scales = torch.logspace(0, -2, p, dtype=torch.float64)
    x = (torch.randn(n, p, generator=g, dtype=torch.float64) * scales) @ _rotation(p, seed + 1) + 3.0
    y = x @ torch.randn(p, q, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, q, generator=g,
                                                                                       dtype=torch.float64)
    return x, y


def _pair(n=240, seed=0):
    """Two layers on each side, one of them 4-d (flattened per example) and one wider."""
    x, y = _layers(n, seed=seed)
    x2, y2 = _layers(n, p=12, q=10, seed=seed + 7)
    feats_a = [x, (x2 @ torch.randn(12, 12, generator=_gen(seed + 3), dtype=torch.float64)).reshape(n, 3, 2, 2)]
    feats_b = [y, torch.cat([y2, x[:, :2]], 1)]
    return feats_a, feats_b


def _reference(name, feats_a, feats_b):
    a, b = [f.numpy() for f in feats_a], [f.numpy() for f in feats_b]
    if name == "linear-encoding":
        return ref.linear_encoding_matrix(a, b, [s.numpy() for s in encoding_split(len(a[0]))])
    return getattr(ref, f"{name.replace('-', '_')}_matrix")(a, b)


# --- against the references ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(INDICES))
def test_matches_the_float64_reference(name):
    feats_a, feats_b = _pair()
    got = INDICES[name](feats_a, feats_b)
    assert got.dtype == torch.float64 and got.shape == (2, 2)
    np.testing.assert_allclose(got.numpy(), _reference(name, feats_a, feats_b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(INDICES))
def test_matches_the_reference_with_more_features_than_examples(name):
    """p > n: the Gram-matrix and QR routes (a conv layer of 16,384 features on 2,000 images), and
    CCA's cap (n // 10 = 6 of 150 directions) in force."""
    g = _gen(5)
    x = torch.randn(60, 150, generator=g, dtype=torch.float64) * torch.logspace(0, -1, 150, dtype=torch.float64)
    y = torch.tanh(x[:, :90] @ torch.randn(90, 120, generator=g, dtype=torch.float64) / 5) + 1
    got = INDICES[name]([x], [y, x])
    np.testing.assert_allclose(got.numpy(), _reference(name, [x], [y, x]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["linear-cka", "rbf-cka"])
def test_cka_in_the_registry_matches_the_reference(name):
    """The benchmark's CKA references (CKA's own tests are tests/test_cka.py)."""
    feats_a, feats_b = _pair()
    np.testing.assert_allclose(MEASURES[name].matrix(feats_a, feats_b).numpy(), _reference(name, feats_a, feats_b),
                               rtol=0, atol=1e-12)


def test_average_ranks_share_ties():
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0], dtype=torch.float64)
    assert average_ranks(values).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5]
    assert average_ranks(values).tolist() == ref.ranks(values.numpy()).tolist()


# --- answers known by hand -------------------------------------------------------------------------
def test_identical_layers():
    x, _ = _layers()
    assert svcca_matrix([x], [x]).item() == pytest.approx(1.0, abs=1e-12)
    assert pwcca_matrix([x], [x]).item() == pytest.approx(1.0, abs=1e-12)
    assert rsa_matrix([x], [x]).item() == pytest.approx(1.0, abs=1e-12)
    # sqrt(2 - 2 ||X'X||_*) with ||X'X||_* = 1 up to rounding (1e-15): the root of rounding is 1e-7
    assert procrustes_matrix([x], [x]).item() < 1e-7
    # ridge's smallest penalty (1e-6 of the mean eigenvalue) shrinks the smallest direction by 1e-4,
    # which costs R^2 about (1e-4)^2 of its small variance share
    assert linear_encoding_matrix([x], [x]).item() == pytest.approx(1.0, abs=1e-6)


def test_a_linear_function_is_encoded_exactly_and_an_unrelated_layer_is_not():
    x, _ = _layers(n=500)
    y = x @ torch.randn(8, 5, generator=_gen(2), dtype=torch.float64) - 7.0
    noise = torch.randn(500, 5, generator=_gen(3), dtype=torch.float64)
    r2 = linear_encoding_matrix([x], [y, noise])
    assert r2[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    # Predictions independent of the held-out targets cannot beat the test mean on average (R^2 <= 0);
    # shrunk to nearly 0 by the penalty chosen on validation, they stay within 100 test images' noise
    # of it: |R^2| <= 3 * sqrt(2 / (100 * 5)) = 0.19 (the spread of a sum of squares of 500 values)
    assert abs(r2[0, 1].item()) < 0.19


def test_independent_layers_score_near_their_noise_floor():
    """Independent Gaussian layers of p = q = 5 on n = 1,000 examples, against bounds from their
    distributions (fixed seed; each bound is 3 x an expectation, or an edge):

    * CCA: a random 5-dimensional subspace gives E[mean rho^2] = 5 / (n - 1), so E[mean rho] <=
      sqrt(5 / 999) = 0.071 (Jensen); PWCCA is a weighted mean of the same rho (<= their largest,
      whose limit is the Wachter edge 2 sqrt(5 / 1000) = 0.14).
    * Procrustes: E||X'Y||_F^2 = 1 / (n - 1) for unit-norm centred independent X, Y, and ||.||_* <=
      sqrt(rank) ||.||_F, so ||X'Y||_* is about sqrt(5 / 999) = 0.071 and d = sqrt(2 - 2 ||X'Y||_*).
    * RSA: the two RDMs correlate through their row means (each example's mean distance), whose
      correlation is N(0, 1/n): |rho| <= 4 / sqrt(n) = 0.13.
    """
    g = _gen(11)
    x, y = (torch.randn(1000, 5, generator=g, dtype=torch.float64) for _ in range(2))
    floor = math.sqrt(5 / 999)
    assert svcca_matrix([x], [y]).item() < 3 * floor
    assert pwcca_matrix([x], [y]).item() < 3 * floor
    assert procrustes_matrix([x], [y]).item() > math.sqrt(2 - 2 * 3 * floor)
    assert abs(rsa_matrix([x], [y]).item()) < 4 / math.sqrt(1000)


def test_cca_is_invariant_to_any_invertible_map_and_cka_is_not():
    """With every direction kept (keep_variance=1), CCA sees only the subspace a layer spans."""
    feats_a, feats_b = _pair()
    mixed = [feats_a[0] @ torch.randn(8, 8, generator=_gen(9), dtype=torch.float64)]
    before, after = (svcca_matrix(a, feats_b, keep_variance=1.0) for a in ([feats_a[0]], mixed))
    assert torch.allclose(before, after, rtol=0, atol=1e-10)
    assert (pwcca_matrix(mixed, feats_b, keep_variance=1.0) - pwcca_matrix([feats_a[0]], feats_b,
                                                                           keep_variance=1.0)).abs().max() > 1e-3
    assert (cka_matrix(mixed, feats_b) - cka_matrix([feats_a[0]], feats_b)).abs().max() > 1e-3


def test_pwcca_weighs_by_the_row_layers_neurons():
    """Unchanged by permuting or sign-flipping a's neurons and by rotating b; changed by rotating a."""
    x, y = _layers()
    base = pwcca_matrix([x], [y]).item()
    flipped = x[:, torch.randperm(8, generator=_gen(1))] * torch.tensor([1.0, -1.0] * 4, dtype=torch.float64)
    assert pwcca_matrix([flipped], [y]).item() == pytest.approx(base, abs=1e-12)
    assert pwcca_matrix([x], [y @ _rotation(6, 4)]).item() == pytest.approx(base, abs=1e-12)
    assert abs(pwcca_matrix([x @ _rotation(8, 4)], [y]).item() - base) > 1e-3


# --- invariances, as the registry (and README's table) claims them ------------------------------------
def _transformed(transform, feats_a, feats_b, side):
    """The features with ``transform`` applied to every layer of ``side`` ("example order" and
    "swap" act on both sides)."""
    def each(x, k):
        p = x[0].numel()
        flat = x.reshape(len(x), -1)
        if transform == "rotation":
            flat = flat @ _rotation(p, 20 + k)
        elif transform == "isotropic scaling":
            flat = 3.7 * flat
        elif transform == "shift":
            flat = flat + 5 * torch.randn(p, generator=_gen(30 + k), dtype=torch.float64)
        elif transform == "invertible linear map":
            flat = flat @ (torch.eye(p, dtype=torch.float64) + torch.randn(p, p, generator=_gen(40 + k),
                                                                            dtype=torch.float64))
        return flat.reshape(x.shape)

    if transform == "example order":
        order = torch.randperm(len(feats_a[0]), generator=_gen(50))
        return [x[order] for x in feats_a], [y[order] for y in feats_b]
    if side == "a":
        return [each(x, k) for k, x in enumerate(feats_a)], feats_b
    return feats_a, [each(y, k) for k, y in enumerate(feats_b)]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("name", list(MEASURES))
def test_each_claimed_invariance_holds_and_each_other_one_does_not(name, transform):
    measure = MEASURES[name]
    feats_a, feats_b = _pair()
    base = measure.matrix(feats_a, feats_b)
    if transform == "swap":
        changes = [(measure.matrix(feats_b, feats_a).T - base).abs().max().item()]
    else:
        changes = [(measure.matrix(*_transformed(transform, feats_a, feats_b, side)) - base).abs().max().item()
                   for side in ("a", "b")]
    if transform in measure.invariances:
        assert max(changes) < 1e-12, (name, transform, changes)
    else:
        assert max(changes) > 1e-3, (name, transform, changes)


def test_every_invariance_named_is_a_known_transform():
    for measure in MEASURES.values():
        assert set(measure.invariances) <= set(TRANSFORMS), measure.name


# --- the registry's contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MEASURES))
def test_registry_contract(name):
    """float64 on the CPU, (layers of a, layers of b), rows = a's layers; channels-last 4-d features
    give what their contiguous copy gives."""
    measure = MEASURES[name]
    feats_a, feats_b = _pair()
    feats_a = [feats_a[0].float(), feats_a[1].float().contiguous(memory_format=torch.channels_last)]
    feats_b = [y.float() for y in feats_b] + [feats_a[0].float()]
    got = measure.matrix(feats_a, feats_b, names_a=["x", "x2"], names_b=["y", "y2", "x"])
    assert got.dtype == torch.float64 and got.device.type == "cpu" and got.shape == (2, 3)
    assert torch.isfinite(got).all()
    for i, xa in enumerate(feats_a):
        for j, xb in enumerate(feats_b):
            single = measure.matrix([xa.contiguous()], [xb]).item()
            # 1e-7: CKA's Gram matrices of float32 features are float32 on a CPU (1e-9 of CKA)
            assert got[i, j].item() == pytest.approx(single, abs=1e-7), (i, j)
    assert isinstance(measure.higher_is_similar, bool) and measure.label and measure.summary


def test_procrustes_is_the_only_distance():
    assert [m.name for m in MEASURES.values() if not m.higher_is_similar] == ["procrustes"]
    assert set(INDICES) | {"linear-cka", "rbf-cka"} == set(MEASURES)


def test_unknown_measure_is_one_line():
    with pytest.raises(ValueError, match="unknown similarity measure 'cca'.*svcca.*linear-encoding"):
        check_measures(["cca"])


# --- degenerate layers: one ValueError naming the layer, never NaN ---------------------------------
@pytest.mark.parametrize("name", list(INDICES))
def test_constant_or_non_finite_layer_is_refused_by_name(name):
    x, y = _layers(n=60)
    constant = torch.full((60, 4), 2.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="'layer2.0' of zoo/r") as info:
        INDICES[name]([x], [y, constant], names_b=["'stem' of zoo/r", "'layer2.0' of zoo/r"])
    assert "constant" in str(info.value) and "\n" not in str(info.value)
    broken = x.clone()
    broken[3, 1] = float("nan")
    with pytest.raises(ValueError, match="features of mine contain NaN or infinite values"):
        INDICES[name]([broken], [y], names_a=["mine"])


@pytest.mark.parametrize("name", list(INDICES))
def test_too_few_or_mismatched_examples(name):
    x, y = _layers(n=40)
    with pytest.raises(ValueError, match="has 30 examples but layer a\\[0\\] has 40"):
        INDICES[name]([x], [y[:30]])
    with pytest.raises(ValueError, match="needs at least \\d+ examples"):
        INDICES[name]([x[:1]], [y[:1]])
    with pytest.raises(ValueError, match="at least one layer on each side"):
        INDICES[name]([], [y])
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        INDICES[name]([x.numpy()], [y])


def test_rsa_refuses_equidistant_examples():
    """The corners of a simplex are all equally far apart: every dissimilarity ties."""
    x, _ = _layers(n=12)
    with pytest.raises(ValueError, match="RSA is undefined for layer corners: every two examples are equally far"):
        rsa_matrix([torch.eye(12, dtype=torch.float64)], [x], names_a=["corners"])


def test_encoding_refuses_a_layer_constant_on_its_training_or_test_images():
    x, y = _layers(n=50)
    train, _, test = encoding_split(50)
    for rows, side in ((train, "a"), (test, "b")):
        # varies, but not on these rows; 0.1 is not a binary fraction, so a mean of it rounds
        flat = torch.full((50, 3), 0.1, dtype=torch.float64)
        flat[[k for k in range(50) if k not in set(rows.tolist())]] = 0.7
        feats_a, feats_b = ([flat], [y]) if side == "a" else ([x], [flat])
        with pytest.raises(ValueError, match="linear encoding score is undefined for layer odd: its features are "
                                             "the same for every (training|test) image"):
            linear_encoding_matrix(feats_a, feats_b, names_a=["odd"], names_b=["odd"])


def test_encoding_split_is_fixed_and_disjoint():
    train, val, test = encoding_split(103)
    assert (len(train), len(val), len(test)) == (63, 20, 20)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(103))
    assert all(torch.equal(a, b) for a, b in zip(encoding_split(103), (train, val, test)))


def test_kept_dimensions():
    variances = torch.tensor([60.0, 25.0, 10.0, 4.5, 0.5], dtype=torch.float64)  # shares .6 .85 .95 .995 1
    assert kept_dimensions(variances, 0.99, cap=10) == 4
    assert kept_dimensions(variances, 0.9, cap=10) == 3
    assert kept_dimensions(variances, 0.99, cap=2) == 2
    assert kept_dimensions(torch.tensor([1.0, 1e-11, -1e-14], dtype=torch.float64), 1.0, cap=10) == 1


@pytest.mark.parametrize("option", [{"keep_variance": 0}, {"keep_variance": 1.5}, {"keep_variance": True},
                                    {"examples_per_dim": 1}, {"examples_per_dim": 2.5}])
def test_cca_options_are_checked(option):
    x, y = _layers(n=40)
    with pytest.raises(ValueError, match=next(iter(option))):
        svcca_matrix([x], [y], **option)


def test_the_stated_choices_are_the_references():
    assert (cca.KEEP_VARIANCE, cca.EXAMPLES_PER_DIM, cca._NOISE_FLOOR) == (ref.KEEP_VARIANCE, ref.EXAMPLES_PER_DIM,
                                                                           ref.NOISE_FLOOR)
    assert np.allclose(encoding.PENALTY_EXPONENTS, ref.PENALTY_EXPONENTS)


# --- published implementations (requirements-reference.txt; skipped where not installed) -------------
def test_cca_and_pwcca_match_repsim():
    """repsim (Kisung You): full-rank CCA, its "pillai" summary = the mean canonical correlation,
    and PWCCA weighted by each side in turn, averaged."""
    repsim = pytest.importorskip("repsim")
    x, y = _layers(n=300)
    xs, ys = x.numpy(), y.numpy()
    assert svcca_matrix([x], [y], keep_variance=1.0).item() == pytest.approx(repsim.cca([xs, ys], "pillai")[0, 1],
                                                                              abs=1e-12)
    both = (pwcca_matrix([x], [y], keep_variance=1.0).item() + pwcca_matrix([y], [x], keep_variance=1.0).item()) / 2
    assert both == pytest.approx(repsim.pwcca([xs, ys])[0, 1], abs=1e-12)


def test_svcca_matches_repsim_where_99_percent_keeps_the_whole_subspace():
    """repsim's SVCCA trims 1 % of each layer's *dimensions* (its SVD runs on an orthonormal
    basis); on data whose 4 directions each hold >= 11 % of the variance, both keep all 4."""
    repsim = pytest.importorskip("repsim")
    g = _gen(8)
    zx = torch.randn(300, 4, generator=g, dtype=torch.float64)
    zy = zx @ _rotation(4, 10) + 0.5 * torch.randn(300, 4, generator=g, dtype=torch.float64)
    spread = torch.diag(torch.tensor([1.0, 1.2, 1.4, 1.5], dtype=torch.float64))
    x, y = ((z - z.mean(0)) @ spread @ _rotation(width, width)[:4] for z, width in ((zx, 20), (zy, 15)))
    assert svcca_matrix([x], [y]).item() == pytest.approx(repsim.svcca([x.numpy(), y.numpy()], "pillai")[0, 1],
                                                          abs=1e-12)


def test_procrustes_matches_scipy():
    """scipy.linalg.orthogonal_procrustes finds the rotation; the distance is its residual."""
    linalg = pytest.importorskip("scipy.linalg")
    x, y = _layers()

    def unit(z):
        z = np.pad(z.numpy() - z.numpy().mean(0), ((0, 0), (0, 8 - z.shape[1])))
        return z / np.linalg.norm(z)

    rotation, _ = linalg.orthogonal_procrustes(unit(y), unit(x))
    assert procrustes_matrix([x], [y]).item() == pytest.approx(np.linalg.norm(unit(x) - unit(y) @ rotation), abs=1e-12)


def test_rsa_matches_rsatoolbox():
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    feats_a, feats_b = _pair(n=120)
    rdms = [calc_rdm(Dataset(f.reshape(120, -1).numpy()), method="euclidean") for f in feats_a + feats_b]
    expected = np.array([[compare(a, b, method="spearman").item() for b in rdms[2:]] for a in rdms[:2]])
    np.testing.assert_allclose(rsa_matrix(feats_a, feats_b).numpy(), expected, rtol=0, atol=1e-12)


def test_linear_encoding_matches_scikit_learn():
    """scikit-learn's Ridge on the same split and penalties, chosen by validation R^2, scored by
    r2_score(multioutput="variance_weighted")."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    feats_a, feats_b = _pair()
    train, val, test = (s.numpy() for s in encoding_split(240))

    def score(x, y):
        x, y = x.reshape(240, -1).numpy(), y.numpy()
        scale = ((x[train] - x[train].mean(0)) ** 2).sum() / len(train)
        fits = [Ridge(alpha=scale * 10.0**e).fit(x[train], y[train]) for e in encoding.PENALTY_EXPONENTS]
        best = max(fits, key=lambda f: r2_score(y[val], f.predict(x[val]), multioutput="variance_weighted"))
        return r2_score(y[test], best.predict(x[test]), multioutput="variance_weighted")

    expected = np.array([[score(x, y) for y in feats_b] for x in feats_a])
    np.testing.assert_allclose(linear_encoding_matrix(feats_a, feats_b).numpy(), expected, rtol=0, atol=1e-12)
