"""Independent NumPy float64 references of the similarity indices, written from the papers' formulas
(not from StitchLab's algorithms: no Gram-matrix tricks, no QR factors, no eigenvector shortcuts).

Used by tests/test_similarity_indices.py on small data and by bench/similarity_indices.py on the
default pair. Each ``*_matrix(feats_a, feats_b)`` returns the ``(len(a), len(b))`` matrix, with each
layer's per-layer work done once. The bench hands the indices that a rotation of the features
leaves unchanged each layer's :func:`isometric_coordinates` (computed once) instead of the raw
features: 16,384 x 16,384 cross-covariances do not fit.
"""

from __future__ import annotations

import numpy as np

# The choices StitchLab states (core/similarity/*.py docstrings), repeated here as numbers.
KEEP_VARIANCE, EXAMPLES_PER_DIM, NOISE_FLOOR = 0.99, 10, 1e-10
PENALTY_EXPONENTS = np.arange(-6.0, 4.01, 0.5)


def centre(x) -> np.ndarray:
    """(n, ...) -> (n, p) float64, each feature minus its mean over the examples."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x - x.mean(0)


def isometric_coordinates(x) -> np.ndarray:
    """At most n columns with the centred features' inner products between examples (hence their
    distances, subspaces and singular values): R' of the QR factorisation X' = Q R when p > n."""
    x = centre(x)
    return x if x.shape[1] <= len(x) else np.linalg.qr(x.T, mode="r").T


# --- SVCCA and PWCCA (Raghu et al. 2017; Morcos et al. 2018) ----------------------------------------
def _svd_reduce(x) -> np.ndarray:
    """The top principal directions holding KEEP_VARIANCE of the variance (at most n // 10, none
    below the noise floor), as coordinates U_k S_k (n, k)."""
    u, s, _ = np.linalg.svd(centre(x), full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    k = min(np.searchsorted(share, KEEP_VARIANCE) + 1, np.sum(s**2 > NOISE_FLOOR * s[0] ** 2),
            len(x) // EXAMPLES_PER_DIM)
    return u[:, :k] * s[:k]


def _cca(x, y):
    """Canonical correlations (descending, min(kx, ky) of them) and x's canonical weights, from
    Hotelling's (1936) eigenproblem Sxx^-1 Sxy Syy^-1 Syx a = rho^2 a."""
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    rho2, weights = np.linalg.eig(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T))
    order = np.argsort(-rho2.real)[:min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(rho2.real[order], 0, None)), weights.real[:, order]


def svcca_matrix(feats_a, feats_b) -> np.ndarray:
    ra, rb = [_svd_reduce(x) for x in feats_a], [_svd_reduce(y) for y in feats_b]
    return np.array([[_cca(x, y)[0].mean() for y in rb] for x in ra])


def pwcca_matrix(feats_a, feats_b, neurons_a=None) -> np.ndarray:
    """``neurons_a``: side a's original features when ``feats_a`` are principal coordinates (the
    weights sum over the neurons)."""
    neurons = [centre(x) for x in (feats_a if neurons_a is None else neurons_a)]
    ra, rb = [_svd_reduce(x) for x in feats_a], [_svd_reduce(y) for y in feats_b]

    def pwcca(x, y, neurons):
        rho, weights = _cca(x, y)
        h = x @ weights
        h /= np.linalg.norm(h, axis=0)  # canonical variates, unit norm
        alpha = np.abs(h.T @ neurons).sum(1)  # sum_j |<h_i, x_j>|
        return (alpha * rho).sum() / alpha.sum()

    return np.array([[pwcca(x, y, z) for y in rb] for x, z in zip(ra, neurons)])


# --- orthogonal Procrustes (Schönemann 1966; Williams et al. 2021) ----------------------------------
def procrustes_matrix(feats_a, feats_b) -> np.ndarray:
    def unit(x):
        x = centre(x)
        return x / np.linalg.norm(x)

    def distance(x, y):
        width = max(x.shape[1], y.shape[1])
        x, y = np.pad(x, ((0, 0), (0, width - x.shape[1]))), np.pad(y, ((0, 0), (0, width - y.shape[1])))
        u, _, vt = np.linalg.svd(y.T @ x)
        return np.linalg.norm(x - y @ (u @ vt))  # the residual of the best rotation, computed directly

    ua, ub = [unit(x) for x in feats_a], [unit(y) for y in feats_b]
    return np.array([[distance(x, y) for y in ub] for x in ua])


# --- RSA (Kriegeskorte et al. 2008), Euclidean distances, Spearman ---------------------------------
def ranks(v) -> np.ndarray:
    """1-based ranks, ties at their average rank (scipy.stats.rankdata's default)."""
    _, group, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[group]


def rdm(x) -> np.ndarray:
    """Euclidean distances of every pair i < j, row by row, from the differences themselves."""
    x = centre(x)
    return np.concatenate([np.sqrt(((x[i + 1:] - x[i]) ** 2).sum(1)) for i in range(len(x) - 1)])


def rsa_matrix(feats_a, feats_b) -> np.ndarray:
    ra, rb = [ranks(rdm(x)) for x in feats_a], [ranks(rdm(y)) for y in feats_b]
    return np.array([[np.corrcoef(u, v)[0, 1] for v in rb] for u in ra])


# --- linear encoding: ridge regression, held-out variance-weighted R^2 --------------------------------
def linear_encoding_matrix(feats_a, feats_b, split) -> np.ndarray:
    """``split``: (train, val, test) index arrays. Ridge through the SVD of the centred training
    features (Hastie et al., The Elements of Statistical Learning, eq. 3.47), intercept = the
    training means, penalties m * 10**e with m the training images' mean squared centred norm."""
    train, val, test = (np.asarray(s) for s in split)

    def fit(x):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        mean = x[train].mean(0)
        u, s, vt = np.linalg.svd(x[train] - mean, full_matrices=False)
        m = ((x[train] - mean) ** 2).sum() / len(train)
        return x - mean, u, s, vt, m

    def r2(y_true, y_pred):  # sklearn.metrics.r2_score(..., multioutput="variance_weighted")
        return 1 - ((y_true - y_pred) ** 2).sum() / ((y_true - y_true.mean(0)) ** 2).sum()

    def score(fitted, y):
        xc, u, s, vt, m = fitted
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        y = y - y[train].mean(0)
        uy = u.T @ y[train]

        def predict(rows, penalty):
            return xc[rows] @ vt.T @ ((s / (s**2 + penalty))[:, None] * uy)

        penalties = m * 10.0**PENALTY_EXPONENTS
        best = penalties[np.argmax([r2(y[val], predict(val, lam)) for lam in penalties])]
        return r2(y[test], predict(test, best))

    fitted = [fit(x) for x in feats_a]
    return np.array([[score(f, y) for y in feats_b] for f in fitted])


# --- CKA (Kornblith et al. 2019), full batch, for the benchmark's table ----------------------------
def linear_cka_matrix(feats_a, feats_b) -> np.ndarray:
    def hsic(x, y):  # ||y'x||_F^2 of centred features = tr(K H L H) up to (n-1)^2
        return np.linalg.norm(y.T @ x) ** 2

    ca, cb = [centre(x) for x in feats_a], [centre(y) for y in feats_b]
    return np.array([[hsic(x, y) / np.sqrt(hsic(x, x) * hsic(y, y)) for y in cb] for x in ca])


def rbf_cka_matrix(feats_a, feats_b, sigma=0.8) -> np.ndarray:
    """exp(-d^2 / (2 s^2)), s = sigma x the median distance of the pairs i < j (the lower middle
    one, as torch.median), then CKA of the centred kernels."""
    def centred_kernel(x):
        x = centre(x)
        norms = (x**2).sum(1)
        d2 = np.maximum(norms[:, None] + norms[None, :] - 2 * x @ x.T, 0)  # (n, n) squared distances
        np.fill_diagonal(d2, 0)
        median = np.sort(d2[np.triu_indices(len(x), 1)])[(len(x) * (len(x) - 1) // 2 - 1) // 2]
        k = np.exp(-d2 / (2 * sigma**2 * median))
        return k - k.mean(0) - k.mean(1)[:, None] + k.mean()

    ka, kb = [centred_kernel(x) for x in feats_a], [centred_kernel(y) for y in feats_b]
    return np.array([[(k * m).sum() / np.sqrt((k * k).sum() * (m * m).sum()) for m in kb] for k in ka])
