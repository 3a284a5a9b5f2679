"""CKA: hand-checkable identities, agreement with textbook float64 formulas, and the model level."""

import json
import subprocess
import sys

import pytest
import torch

from core.engine.fused import engine_prefix
from core.engine.layers import resolve_layer, sender_prefix
from core.engine.stitches import make_stitch
from core.errors import Cancelled
from core.similarity.cka import MinibatchCKA, cka_matrix, gram_precision, hsic_unbiased
from core.similarity.networks import model_cka, stitch_cka


def _data(n, p=24, q=16, seed=0, noise=1.0):
    """X (n, p) and a noisy linear function of it Y (n, q), in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = x @ torch.randn(p, q, generator=g, dtype=torch.float64) + noise * torch.randn(n, q, generator=g,
                                                                                        dtype=torch.float64)
    return x, y


# --- textbook references, written from the formulas with explicit matrices -------------------------
def _ref_kernel(x, kernel, sigma=0.8):
    x = x.double().reshape(len(x), -1)
    if kernel == "linear":
        return x @ x.T
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # (n, n) squared distances, no Gram trick
    n = len(x)
    median = d2[torch.triu(torch.ones(n, n, dtype=torch.bool), 1)].median()
    return torch.exp(-d2 / (2 * sigma**2 * median))


def _ref_full(x, y, kernel):
    n = len(x)
    H = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    K, L = _ref_kernel(x, kernel), _ref_kernel(y, kernel)

    def hsic(A, B):
        return torch.trace(A @ H @ B @ H) / (n - 1) ** 2

    return (hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))).item()


def _ref_hsic1(K, L):
    n = len(K)
    one = torch.ones(n, 1, dtype=torch.float64)
    Kt, Lt = K.clone(), L.clone()
    for i in range(n):
        Kt[i, i] = Lt[i, i] = 0.0
    value = (torch.trace(Kt @ Lt) + (one.T @ Kt @ one) * (one.T @ Lt @ one) / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (one.T @ Kt @ Lt @ one))
    return value.item() / (n * (n - 3))


def _ref_minibatch(x, y, kernel, batch_size):
    kl = kk = ll = 0.0
    for start in range(0, len(x), batch_size):
        K, L = _ref_kernel(x[start:start + batch_size], kernel), _ref_kernel(y[start:start + batch_size], kernel)
        kl, kk, ll = kl + _ref_hsic1(K, L), kk + _ref_hsic1(K, K), ll + _ref_hsic1(L, L)
    return kl / (kk * ll) ** 0.5


def _naive_float32_minibatch(x, y, batch_size):
    """What a fast library does: uncentred float32 Grams, unbiased HSIC, float32 sums."""
    def hsic(K, L):
        n = len(K)
        Kt, Lt = K - torch.diag(K.diagonal()), L - torch.diag(L.diagonal())
        one = torch.ones(n, 1)
        value = (Kt * Lt).sum() + (one.T @ Kt @ one) * (one.T @ Lt @ one) / ((n - 1) * (n - 2)) \
            - 2 / (n - 2) * (one.T @ Kt @ Lt @ one)
        return value / (n * (n - 3))

    kl = kk = ll = torch.zeros(())
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].float(), y[start:start + batch_size].float()
        K, L = xb @ xb.T, yb @ yb.T
        kl, kk, ll = kl + hsic(K, L), kk + hsic(K, K), ll + hsic(L, L)
    return (kl / torch.sqrt(kk * ll)).item()


# --- identities -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("batch_size", [None, 50])
def test_cka_of_a_representation_with_itself_is_one(kernel, batch_size):
    x = torch.randn(200, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    result = cka_matrix([x], [x, x.clone()], kernel=kernel, batch_size=batch_size)
    assert result.dtype == torch.float64 and result.shape == (1, 2)
    assert torch.allclose(result, torch.ones(1, 2, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_linear_cka_is_invariant_to_rotation_scaling_and_shift(batch_size):
    x, y = _data(256)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    base = cka_matrix([x], [y], batch_size=batch_size)
    moved = cka_matrix([3.7 * x @ q + 5.0], [y], batch_size=batch_size)
    assert 0.3 < base.item() < 0.99  # a case where the invariances are not trivially 1 = 1
    assert moved.item() == pytest.approx(base.item(), abs=1e-12)


def test_unbiased_linear_hsic_does_not_change_when_features_are_shifted():
    # Why centring features first is allowed: it changes the rounding, not the value.
    x, y = _data(40)
    shift_x, shift_y = torch.linspace(-3, 3, x.shape[1], dtype=torch.float64), torch.full((y.shape[1],), 2.5,
                                                                                            dtype=torch.float64)
    plain = hsic_unbiased(x @ x.T, y @ y.T)
    shifted = hsic_unbiased((x + shift_x) @ (x + shift_x).T, (y + shift_y) @ (y + shift_y).T)
    assert shifted.item() == pytest.approx(plain.item(), rel=1e-9)
    assert plain.item() == pytest.approx(_ref_hsic1(x @ x.T, y @ y.T), rel=1e-12)


# --- agreement with the float64 references --------------------------------------------------------
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_matches_float64_reference_on_well_scaled_data(kernel):
    x, y = _data(120)
    x32, y32 = x.float().view(120, 4, 3, 2), y.float()  # the engine takes float32 activations of any shape
    x, y = x32.double(), y32.double()
    assert cka_matrix([x32], [y32], kernel).item() == pytest.approx(_ref_full(x, y, kernel), abs=1e-6)
    assert cka_matrix([x32], [y32], kernel, batch_size=40).item() == pytest.approx(
        _ref_minibatch(x, y, kernel, 40), abs=1e-6)


def test_stays_accurate_when_activations_are_in_the_thousands():
    x, y = _data(400, p=64, q=48)
    x32, y32 = (x * 1000 + 5000).float(), (y * 1000 + 5000).float()  # values like a real network's late layers
    x, y = x32.double(), y32.double()
    ref_full, ref_mini = _ref_full(x, y, "linear"), _ref_minibatch(x, y, "linear", 200)
    ours_full = cka_matrix([x32], [y32]).item()
    ours_mini = cka_matrix([x32], [y32], batch_size=200).item()
    assert ours_full == pytest.approx(ref_full, rel=1e-4)
    assert ours_mini == pytest.approx(ref_mini, rel=1e-4)
    # Uncentred float32 Grams lose their digits to cancellation: measured 5e-3 to 1e-2 off here
    # (seeds 0-3), against 6e-11 to 1.3e-9 for float32 Grams of centred features (the CPU's default)
    # and ~1e-11 for float64 ones.
    naive_error = abs(_naive_float32_minibatch(x32, y32, 200) - ref_mini)
    assert naive_error > 1e-3 and naive_error > 100 * abs(ours_mini - ref_mini)


@pytest.mark.parametrize("batch_size", [None, 200])
def test_float32_grams_of_centred_features_are_as_good_as_float64_ones(batch_size):
    # Centred in float32, the features are exact up to one shared shift (the mean's rounding),
    # which the estimator ignores; what is left is the float32 product's rounding (measured
    # 6e-11 to 1.3e-9 here, seeds 0-3, against the naive float32 computation's 5e-3 to 1e-2).
    x, y = _data(400, p=64, q=48)
    x32, y32 = (x * 1000 + 5000).float(), (y * 1000 + 5000).float()
    f64 = cka_matrix([x32], [y32], batch_size=batch_size, gram="float64").item()
    f32 = cka_matrix([x32], [y32], batch_size=batch_size, gram="float32").item()
    assert f32 == pytest.approx(f64, abs=1e-8) and f32 != f64  # float32 did run, and lost next to nothing
    assert cka_matrix([x32], [y32], batch_size=batch_size).item() == f32  # "auto" on a CPU
    assert cka_matrix([x32.double()], [y32.double()], batch_size=batch_size).item() == f64  # float64 stays float64


def test_auto_gram_precision_is_float32_only_on_an_ieee_cpu_for_32_bit_features():
    assert gram_precision("auto", "cpu", torch.float32) == "float32"
    assert gram_precision("auto", "cpu", torch.bfloat16) == "float32"
    assert gram_precision("auto", "cpu", torch.float64) == "float64"
    assert gram_precision("auto", "cuda", torch.float32) == "float64"
    assert gram_precision("tf32x3", "cpu") == "tf32x3"
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # what set_float32_matmul_precision("medium") does
    try:
        assert gram_precision("auto", "cpu", torch.float32) == "float64"
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
    with pytest.raises(ValueError, match="unknown gram precision 'float16': choose one of auto, float64"):
        MinibatchCKA(1, 1, gram="float16")


def test_a_float32_gram_that_overflows_is_redone_in_float64():
    x, y = _data(64, p=24, q=16)
    huge = (x * 1e20).float()  # finite in float32, but its squared norms are not
    assert torch.isfinite(huge).all() and not torch.isfinite(huge @ huge.T).all()
    for batch_size in (None, 32):
        expected = cka_matrix([x], [y], batch_size=batch_size).item()  # CKA ignores the scale
        assert cka_matrix([huge], [y.float()], batch_size=batch_size).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_estimate_is_close_to_full_batch_on_many_examples(kernel):
    x, y = _data(4000 if kernel == "linear" else 2000, p=32, q=16, noise=2.0)  # the RBF kernel costs more
    full = cka_matrix([x], [y], kernel)
    mini = cka_matrix([x], [y], kernel, batch_size=500)
    assert 0.2 < full.item() < 0.95
    assert mini.item() == pytest.approx(full.item(), abs=0.02)


def test_a_short_last_batch_is_folded_into_the_one_before():
    x, y = _data(103)
    folded = MinibatchCKA(1, 1)
    folded.update([x[:50]], [y[:50]])
    folded.update([x[50:]], [y[50:]])  # 53 = 50 + the 3 left over
    assert cka_matrix([x], [y], batch_size=50).item() == pytest.approx(folded.result().item(), abs=1e-14)


def test_streaming_accumulator_gives_every_pair():
    x, y = _data(90)
    acc = MinibatchCKA(2, 1, names_a=["x", "y"], names_b=["y"])
    for start in range(0, 90, 30):
        acc.update([x[start:start + 30], y[start:start + 30]], [y[start:start + 30]])
    assert torch.allclose(acc.result(), cka_matrix([x, y], [y], batch_size=30), atol=1e-14, rtol=0)
    assert acc.n_examples == 90 and acc.result()[1, 0].item() == pytest.approx(1.0, abs=1e-12)


# --- refusals ---------------------------------------------------------------------------------------
def test_batches_smaller_than_four_are_refused():
    x, y = _data(20)
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 4"):
        cka_matrix([x], [y], batch_size=3)
    with pytest.raises(ValueError, match=r"minibatch of 3 examples \(layer a\[0\]\).*divides by n-3"):
        MinibatchCKA(1, 1).update([x[:3]], [y[:3]])
    with pytest.raises(ValueError, match="at least 4 examples, got 3"):
        cka_matrix([x[:3]], [y[:3]], batch_size=4)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("batch_size", [None, 10])
def test_constant_features_are_an_error_naming_the_layer(kernel, batch_size):
    x, _ = _data(40)
    constant = torch.full((40, 2, 3), 7.25)
    with pytest.raises(ValueError, match=r"layer b\[1\].*constant features"):
        cka_matrix([x], [x, constant], kernel, batch_size=batch_size)
    with pytest.raises(ValueError, match=r"layer 'fc' of net.*constant features"):
        cka_matrix([constant], [x], kernel, batch_size=batch_size, names_a=["'fc' of net"])


def test_a_layer_constant_in_one_minibatch_only_adds_nothing_there():
    # Its kernel in that batch is zeroed (beside layers that vary), then its other batches count.
    # (Linear only: the textbook RBF kernel of a constant batch divides by a zero median.)
    x, y = _data(40)
    y = y.clone()
    y[:20] = 7.25
    ours = cka_matrix([x, y], [y, x], batch_size=20)
    ref = [[_ref_minibatch(a.double(), b.double(), "linear", 20) for b in (y, x)] for a in (x, y)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("batch_size", [None, 10])
def test_an_rbf_kernel_without_bandwidth_is_an_error_naming_the_layer(batch_size):
    # most examples identical: the median pairwise distance is 0 and so is the bandwidth
    x, _ = _data(40)
    mostly_same = torch.zeros(40, 6)
    mostly_same[::5] = torch.randn(8, 6)
    with pytest.raises(ValueError, match=r"RBF kernel of b\[1\] is undefined.*bandwidth of 0"):
        cka_matrix([x], [x, mostly_same], "rbf", batch_size=batch_size)
    assert torch.isfinite(cka_matrix([x], [x, mostly_same], "linear", batch_size=batch_size)).all()


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("batch_size", [None, 10])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_single_non_finite_value_is_refused(kernel, batch_size, bad):
    # finiteness is read off the Gram diagonal: one bad value in one row must still show
    x, y = _data(40)
    y = y.clone()
    y[17, 3] = bad
    with pytest.raises(ValueError, match=r"features of b\[0\] contain NaN or infinite values"):
        cka_matrix([x], [y], kernel, batch_size=batch_size)
    y[17] = bad  # a whole row
    with pytest.raises(ValueError, match="NaN or infinite"):
        cka_matrix([x], [y], kernel, batch_size=batch_size)


def test_other_bad_input_is_refused_clearly():
    x, y = _data(20)
    with pytest.raises(ValueError, match="unknown kernel 'cosine'"):
        cka_matrix([x], [y], kernel="cosine")
    with pytest.raises(ValueError, match=r"layer b\[0\] has 19 examples but layer a\[0\] has 20"):
        cka_matrix([x], [y[:19]])
    with pytest.raises(ValueError, match="sigma .* must be positive"):
        cka_matrix([x], [y], kernel="rbf", sigma=0)
    with pytest.raises(ValueError, match="NaN"):
        cka_matrix([x], [y.masked_fill(y > 1, float("nan"))])


# --- networks ---------------------------------------------------------------------------------------
def test_model_cka_between_two_seeds(r1111_pair):
    seen = []
    result = model_cka("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", limit=600, batch_size=300, device="cpu",
                       progress=lambda event: seen.append(event.fraction))
    matrix = torch.tensor(result.cka)
    assert result.layers_a == result.layers_b == ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert matrix.shape == (5, 5) and result.n_examples == 600
    assert ((matrix >= 0) & (matrix <= 1)).all()
    diagonal = matrix.diagonal()
    assert diagonal.min() > 0.9  # two seeds of one architecture: same layers represent alike
    assert (diagonal >= matrix.max(1).values - 0.02).all()
    assert seen == [0.5, 1.0]
    data = result.to_json()
    assert set(data) == {"model_a", "model_b", "layers_a", "layers_b", "cka", "kernel", "batch_size", "n_examples",
                         "seconds"}
    assert json.loads(json.dumps(data))["cka"] == result.cka


def test_model_cka_of_a_network_with_itself_has_a_unit_diagonal(r1111_pair):
    net = r1111_pair[0]
    result = model_cka(net, net, limit=302, batch_size=150)  # 150, 152: the last 2 images are folded in
    matrix = torch.tensor(result.cka, dtype=torch.float64)
    assert result.n_examples == 302
    assert torch.allclose(matrix.diagonal(), torch.ones(5, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.allclose(matrix, matrix.T, atol=1e-12)


def test_model_cka_streams_the_same_numbers_as_cka_matrix(r1111_pair):
    from core.data.datasets import load_dataset

    a, b = r1111_pair
    result = model_cka(a, b, ["layer2.0", "layer4.0"], ["layer3.0"], limit=250, batch_size=100)
    images = load_dataset("fashion-mnist", "test", 250).images.float() / 255
    # model_cka runs the networks as the stitching engine does (BatchNorm folded)
    layers_a = [resolve_layer(a, "layer2.0"), resolve_layer(a, "layer4.0")]
    with torch.no_grad():
        feats_a = engine_prefix(a, layers_a)(a.prepare(images))
        feats_b = engine_prefix(b, [resolve_layer(b, "layer3.0")])(b.prepare(images))
        plain_a = sender_prefix(a, ["layer2.0", "layer4.0"])(a.prepare(images))
        plain_b = sender_prefix(b, ["layer3.0"])(b.prepare(images))
    streamed = torch.tensor(result.cka, dtype=torch.float64)
    assert torch.allclose(streamed, cka_matrix(feats_a, feats_b, batch_size=100), atol=1e-9, rtol=0)
    # ... which computes the original networks' activations up to float rounding
    assert torch.allclose(streamed, cka_matrix(plain_a, plain_b, batch_size=100), atol=1e-6, rtol=0)


def test_model_cka_can_be_cancelled_and_names_bad_layers(r1111_pair):
    a, b = r1111_pair
    with pytest.raises(Cancelled):
        model_cka(a, b, ["stem"], ["stem"], limit=100, cancel=lambda: True)
    with pytest.raises(ValueError, match="unknown layer 'layer9' of zoo/resnet_1111-s0"):
        model_cka(a, b, ["layer9"], None, limit=100)


def test_an_identity_stitch_into_the_same_layer_has_cka_one(r1111_pair):
    net = r1111_pair[0]
    identity = make_stitch((32, 16, 16), (32, 16, 16)).identity_().train()
    assert stitch_cka(net, net, "layer2.0", "layer2.0", identity, limit=300, batch_size=150) == pytest.approx(
        1.0, abs=1e-9)
    assert identity.training  # its mode is restored
    random = make_stitch((32, 16, 16), (32, 16, 16), seed=0)
    assert stitch_cka(net, r1111_pair[1], "layer2.0", "layer2.0", random, limit=300, batch_size=150) < 0.99
    with pytest.raises(ValueError, match=r"the stitch maps \(32, 16, 16\) -> \(32, 16, 16\), but 'layer3.0'"):
        stitch_cka(net, net, "layer3.0", "layer2.0", identity, limit=300)


# --- command line -------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_cka_json_and_reports_bad_layers_in_one_line(tmp_path, capsys):
    path = tmp_path / "cka.json"
    out = subprocess.run([sys.executable, "-m", "core", "cka", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1",
                          "--layers-a", "stem,layer4.0", "--layers-b", "layer1.0", "--limit", "120", "--batch-size",
                          "60", "--device", "cpu", "--quiet", "--json", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["layers_a"] == ["stem", "layer4.0"] and data["layers_b"] == ["layer1.0"]
    assert len(data["cka"]) == 2 and all(len(row) == 1 and 0 <= row[0] <= 1 for row in data["cka"])
    assert data["kernel"] == "linear" and data["n_examples"] == 120

    # The error path in-process (a second interpreter start would double the test's time).
    from core.cli import main

    code = main(["cka", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "--layers-a", "layer9", "--limit", "50",
                 "--device", "cpu", "--json", "-"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: unknown layer 'layer9' of zoo/resnet_1111-s0")


def test_a_stored_cka_matrix_is_found_only_for_the_same_weights(tmp_path):
    from core import runs
    from core.runs.cka_runs import cka_config, cka_identity
    from core.runs.store import Store

    store = Store(tmp_path / "s.sqlite3")
    config = cka_config("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", limit=100)
    stale = store.create_run("cka", {**cka_identity(config), "weights_a": "weights that changed since"})
    store.update_run(stale, status="done")
    assert runs.find(store, "cka", config) is None
    current = store.create_run("cka", cka_identity(config))
    assert runs.find(store, "cka", config) is None  # not finished yet
    store.update_run(current, status="done")
    assert runs.find(store, "cka", config)["id"] == current


def test_channels_last_features_give_the_same_cka_as_contiguous_ones():
    # channels_last maps are flattened in memory order (no copy); a Gram matrix ignores feature order
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 8, 5, 5, generator=generator), torch.randn(40, 6, 4, 4, generator=generator)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    for batch_size in (None, 10):
        expected = cka_matrix([x], [y], batch_size=batch_size, gram="float64")
        assert torch.allclose(cka_matrix([nhwc], [y], batch_size=batch_size, gram="float64"), expected, atol=1e-12,
                              rtol=0)
        # float32 Gram matrices (the CPU's default) sum in another order: equal up to their rounding
        assert torch.allclose(cka_matrix([nhwc], [y], batch_size=batch_size), expected, atol=1e-6, rtol=0)
