"""Linear encoding score: how well layer i of network A predicts layer j of network B on held-out
images, by ridge regression: the system-identification measure of neuroscience (Yamins et al.
2014; Brain-Score, Schrimpf et al. 2018, regresses by partial least squares), with A as the model
and B as the "brain".

Fixed here, because the papers leave it open:

* **Split**: the examples are shuffled once with seed 0 (:func:`encoding_split`, deterministic)
  into training (60 %), validation (20 %) and test (20 %) images.
* **Model**: ridge regression with an unpenalised intercept (features centred by the training
  images' means), fitted on the training images; the penalty is the one of
  ``lambda = m * 10**e``, e = -6, -5.5, ..., 4 (``PENALTY_EXPONENTS``), that gives the smallest
  squared error on the validation images, where m = the training images' mean squared centred
  norm (the mean eigenvalue of their Gram matrix), so the grid scales with the layer and the score
  does not depend on its units. The fit is not repeated on training + validation images.
* **Score**: R^2 on the test images, *variance-weighted* over B's features:
  1 - sum over features of the squared errors / sum of the squared deviations from the test
  mean (scikit-learn's ``r2_score(..., multioutput="variance_weighted")``). Why not the plain mean
  of per-feature R^2: conv layers have near-constant features (dead ReLUs), whose R^2 is noise
  (or undefined) yet would weigh as much as any other; the weighted R^2 also does not change when
  B's feature space is rotated. It is at most 1 and below 0 when the prediction is worse than the
  test images' mean.

Not symmetric (A predicts B), and not invariant to reordering the examples (the split is by
position). With more features than training images, even B = A scores below 1: a test image's
features outside the span of the training images' cannot be predicted.

Computation, all from n x n Gram matrices (a flattened conv layer has up to 16,384 features):
ridge predictions are linear in the training targets, Y_hat = H Y_train with H = K_test,train V
(D + lambda)^-1 V' from the eigendecomposition K_train = V D V' of A's training Gram matrix; every
squared error is then a trace of H, V and B's Gram matrix L, so a pair costs two n_train^3
products and every penalty a few n_train^2 sums. Directions the training images do not span
(eigenvalue below 1e-12 of the largest: rounding of 0) are left out, as the features' SVD would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.similarity._features import centred, check_layers, gram, pairwise

__all__ = ["PENALTY_EXPONENTS", "SPLIT_SEED", "encoding_split", "linear_encoding_matrix"]

SPLIT_SEED = 0
PENALTY_EXPONENTS = tuple(e / 2 for e in range(-12, 9))  # lambda = m * 10**e, e = -6 ... 4 by half decades
MIN_EXAMPLES = 10  # 2 validation and 2 test images, 6 training images
INDEX = "the linear encoding score"
_NULL = 1e-12  # eigenvalues of the training Gram matrix below this share of the largest are rounding of 0


def encoding_split(n: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (training, validation, test) example indices: one shuffle with ``seed``, then 60/20/20 %."""
    if n < MIN_EXAMPLES:
        raise ValueError(f"{INDEX} needs at least {MIN_EXAMPLES} examples (images), got {n}; use more images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held_out = n // 5
    return order[2 * held_out:], order[:held_out], order[held_out:2 * held_out]


def _recentred(K: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of the features centred by the training images' mean instead of all images'
    (the intercept): K - c1' - 1c' + m, c = K[:, train].mean(1), m = c[train].mean()."""
    c = K[:, train].mean(1)
    return K - c[:, None] - c[None, :] + c[train].mean()


@dataclass
class _Predictor:
    """Layer i of A: its training images' eigenbasis and the penalty grid."""
    V: torch.Tensor  # (t, r): eigenvectors of the training Gram matrix (r: those not null)
    D: torch.Tensor  # (r,): their eigenvalues
    penalties: torch.Tensor  # (g,)
    A_val: torch.Tensor  # (v, t): K_val,train V
    A_test: torch.Tensor  # (s, t): K_test,train V
    M_val: torch.Tensor  # (t, t): A_val' A_val
    M_test: torch.Tensor  # (t, t): A_test' A_test


@dataclass
class _Target:
    """Layer j of B: its Gram matrix recentred, cut into the blocks the squared errors need."""
    train: torch.Tensor  # (t, t)
    val_train: torch.Tensor  # (v, t)
    test_train: torch.Tensor  # (s, t)
    val_total: float  # tr L_val,val
    test_total: float  # tr L_test,test
    test_spread: float  # sum of squared deviations from the test images' mean


def _check_varies(xc: torch.Tensor, rows: torch.Tensor, name: str, images: str) -> None:
    """Exactly, on the features (a Gram matrix would leave rounding where they are equal)."""
    if not bool((xc[rows] != xc[rows[:1]]).any()):
        raise _constant(name, images)


def _constant(name: str, images: str) -> ValueError:
    return ValueError(f"{INDEX} is undefined for layer {name}: its features are the same for every {images} image "
                      f"(fixed split, seed {SPLIT_SEED}); leave this layer out or use more images")


def _checked_gram(feats: torch.Tensor, name: str, rows: torch.Tensor, images: str, train: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of the centred features, centred on the training images, after checking
    that the features vary on ``rows`` (the ``images`` images an R^2 needs them to vary on)."""
    fc = centred(feats, name, INDEX)
    _check_varies(fc, rows, name, images)
    return _recentred(gram(fc), train)


def _predictor(x: torch.Tensor, name: str, split) -> _Predictor:
    train, val, test = split
    K = _checked_gram(x, name, train, "training", train)
    K_train = K[train][:, train]
    scale = K_train.trace() / len(train)  # the mean eigenvalue: the training images' mean squared norm
    penalties = scale * 10.0 ** torch.tensor(PENALTY_EXPONENTS, dtype=torch.float64)
    D, V = torch.linalg.eigh(K_train)
    # Directions the training images do not span (more training images than features) have
    # eigenvalue 0 but come out as +-1e-13 of the largest, and the smallest penalty would divide
    # rounding noise by 1e-6 of the mean: they are dropped, as an SVD of the features would drop them.
    kept = D > _NULL * D[-1]
    D, V = D[kept], V[:, kept]
    A_val, A_test = K[val][:, train] @ V, K[test][:, train] @ V
    return _Predictor(V, D, penalties, A_val, A_test, A_val.T @ A_val, A_test.T @ A_test)


def _target(y: torch.Tensor, name: str, split) -> _Target:
    train, val, test = split
    L = _checked_gram(y, name, test, "test", train)
    L_test = L[test][:, test]
    spread = (L_test.trace() - L_test.sum() / len(test)).item()  # sum ||y - mean_test||^2
    if not spread > 0:  # the features vary on the test images, by less than rounding
        raise _constant(name, "test")
    return _Target(L[train][:, train], L[val][:, train], L[test][:, train], L[val][:, val].trace().item(),
                   L_test.trace().item(), spread)


def _r2(p: _Predictor, t: _Target) -> float:
    """Test R^2 at the penalty with the least validation error.

    With Z = V' Y_train and S = (D + lambda)^-1, the predictions are A S Z, so a block's squared
    error is tr(L_block) - 2 sum_k S_k [V' L_train,block A]_kk + S' (C o M) S, C = Z Z' = V' L_train V,
    M = A' A (o: elementwise; M is symmetric)."""
    C = p.V.T @ t.train @ p.V  # (t, t)
    cross_val = ((p.V.T @ t.val_train.T) * p.A_val.T).sum(1)  # (t,): diagonal of V' L_train,val A_val
    cross_test = ((p.V.T @ t.test_train.T) * p.A_test.T).sum(1)
    G_val, G_test = C * p.M_val, C * p.M_test
    S = 1.0 / (p.D[None, :] + p.penalties[:, None])  # (g, t): one row per penalty
    val_error = t.val_total - 2 * S @ cross_val + ((S @ G_val) * S).sum(1)  # (g,)
    best = int(torch.argmin(val_error))  # the first (smallest) penalty on a tie
    s = S[best]
    test_error = t.test_total - 2 * (s @ cross_test) + s @ G_test @ s
    return 1.0 - test_error.item() / t.test_spread


def linear_encoding_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor],
                           names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None) -> torch.Tensor:
    """Held-out R^2 of ridge regression from every layer in ``feats_a`` (predictors) to every layer in
    ``feats_b`` (targets); at most 1, 0 = no better than the test images' mean.

    Args:
        feats_a, feats_b: tensors ``(n, ...)`` of the same n >= 10 examples, flattened per example.
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).

    Returns:
        float64 ``(len(feats_a), len(feats_b))`` on the CPU; rows are the layers of a (predictors).

    Example::

        >>> x = torch.randn(1000, 8)
        >>> linear_encoding_matrix([x], [x @ torch.randn(8, 5), torch.randn(1000, 5)]).round(decimals=2)
        tensor([[ 1.0000, -0.0100]], dtype=torch.float64)
    """
    feats_a, feats_b, names_a, names_b, n = check_layers(feats_a, feats_b, names_a, names_b, INDEX, MIN_EXAMPLES)
    split = encoding_split(n)
    return pairwise(feats_a, feats_b, names_a, names_b, lambda y, name: _target(y, name, split), _r2,
                    prepare_a=lambda x, name: _predictor(x, name, split))
