"""Centred kernel alignment (CKA): how similar two layers' representations are, on the same inputs.

CKA compares the *kernel* (example x example similarity) matrices of two layers. For feature
matrices X (n, p) and Y (n, q) of the same n examples, with kernels K and L::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) * HSIC(L, L))

Two estimators of HSIC (Hilbert-Schmidt independence criterion):

* **full batch** (Kornblith et al. 2019): the biased HSIC0 = tr(K H L H) / (n-1)^2 with
  H = I - 11'/n, on all n examples at once. Needs every activation in memory (n x n kernels).
* **minibatch** (Nguyen, Raghu & Kornblith 2021): the unbiased HSIC1 of Song et al. 2012,
  summed over consecutive batches, the ratio taken at the end::

      CKA = sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) * sum_b HSIC1(L_b, L_b))

  Memory is one batch; :class:`MinibatchCKA` accumulates it batch by batch.

Kernels: ``"linear"`` (K = X X') and ``"rbf"`` (K_ij = exp(-|x_i - x_j|^2 / (2 s^2)), with the
bandwidth s = ``sigma`` x the median pairwise distance, i < j, of that batch).

Numerics (why they are as they are): activations of real networks can be large and far from
zero, and an uncentred float32 Gram matrix then loses most of its digits to cancellation
(pytorch-cka deviates from a float64 reference by up to 0.05 on two ResNet-18s). Here features
are centred per batch *before* forming kernels; the linear kernel's unbiased HSIC is exactly
invariant to shifting the features, so centring changes nothing but the rounding. Every HSIC
sum is float64. The Gram matrices themselves are float64 on a GPU (as fast as float32 there) and
float32 on a CPU (twice as fast there; see :func:`core.similarity.kernels.gram_precision`): centred in
float32, features are exact up to one shift shared by every example (the mean's rounding),
which the estimator ignores, so only the Gram's own rounding remains (about 1e-9 of CKA on
ResNets and on the tests' data). A layer whose self-HSIC is not positive (constant features)
makes CKA undefined: that raises ``ValueError`` naming the layer, never NaN, and nothing is
clamped.

CKA between the layers of two networks (:func:`core.similarity.networks.model_cka`) uses the layers of a
stitching grid (:func:`core.engine.layers.list_layers`), so CKA cell (i, j) and stitching cell (i, j)
describe the same two activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.similarity.kernels import GRAMS, KERNELS, check_kernel, features_gram, gram_precision, kernel_matrix

__all__ = ["GRAMS", "KERNELS", "MIN_BATCH", "MinibatchCKA", "cka_matrix", "check_minibatch", "gram_precision",
           "hsic_unbiased", "minibatch_spans"]

MIN_BATCH = 4  # the unbiased estimator divides by n - 3


# --- HSIC of one pair (the textbook forms; the matrix code below vectorises them) ---------------
def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC1 (Song et al. 2012) of two ``(n, n)`` kernels, n >= 4, in float64::

        [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) (K~1).(L~1)] / (n(n-3))

    where K~ is K with its diagonal zeroed."""
    n = K.shape[0]
    if n < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_BATCH} examples (it divides by n-3), got {n}")
    Kt, Lt = _zero_diagonal(K.to(torch.float64)), _zero_diagonal(L.to(torch.float64))
    k1, l1 = Kt.sum(1), Lt.sum(1)
    return ((Kt * Lt).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def _zero_diagonal(K: torch.Tensor) -> torch.Tensor:
    return K.clone().fill_diagonal_(0.0)


# --- the streaming minibatch estimator -----------------------------------------------------------
class MinibatchCKA:
    """Minibatch CKA between every layer of side a and every layer of side b, batch by batch.

    Args:
        n_a, n_b: how many layers each side has.
        kernel: ``"linear"`` or ``"rbf"``; sigma: the RBF bandwidth as a fraction of the
            batch's median pairwise distance.
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).
        gram: the Gram matrices' precision: ``"auto"`` (float32 on a CPU, float64 on a GPU; see
            :func:`core.similarity.kernels.gram_precision`), ``"float64"``, ``"float32"`` or
            ``"tf32x3"`` (split-precision tensor-core products on CUDA, float64 elsewhere; see
            :func:`core.similarity.kernels._gram`).

    Example::

        >>> acc = MinibatchCKA(2, 1)
        >>> for xa, xb in batches:              # xa: [(B, 16, 32, 32), (B, 64)], xb: [(B, 10)]
        ...     acc.update(xa, xb)
        >>> acc.result().shape                  # float64, rows: layers of a
        torch.Size([2, 1])
    """

    def __init__(self, n_a: int, n_b: int, kernel: str = "linear", sigma: float = 0.8,
                 names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None,
                 gram: str = "auto"):
        check_kernel(kernel, sigma)
        gram_precision(gram, "cpu")  # refuses an unknown name now rather than at the first batch
        self.gram = gram
        if n_a < 1 or n_b < 1:
            raise ValueError(f"CKA needs at least one layer on each side, got {n_a} and {n_b}")
        self.kernel, self.sigma = kernel, sigma
        self.names_a = _names(names_a, n_a, "a")
        self.names_b = _names(names_b, n_b, "b")
        self.n_a, self.n_b = n_a, n_b
        self.state: dict[str, torch.Tensor] | None = None  # sums and flags, on the features' device
        self.n_examples = 0
        self.n_batches = 0

    def _start(self, device) -> dict[str, torch.Tensor]:
        if self.state is None:
            f64, flag = {"dtype": torch.float64, "device": device}, {"dtype": torch.bool, "device": device}
            self.state = {"cross": torch.zeros(self.n_a, self.n_b, **f64),  # sum_b HSIC1(K_b, L_b)
                          "self_a": torch.zeros(self.n_a, **f64), "self_b": torch.zeros(self.n_b, **f64),
                          "varied_a": torch.zeros(self.n_a, **flag), "varied_b": torch.zeros(self.n_b, **flag),
                          "finite_a": torch.ones(self.n_a, **flag), "finite_b": torch.ones(self.n_b, **flag),
                          "bandwidth_a": torch.ones(self.n_a, **flag), "bandwidth_b": torch.ones(self.n_b, **flag)}
        return self.state

    def _stats(self, feats, names, side, cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per layer: vec(K~) stacked ``(layers, n*n)``, K~1 ``(layers, n)``, 1'K~1 ``(layers,)``.

        Per layer only what must be (centring, the Gram matrix, an RBF kernel); the rest runs once
        on the stacked kernels: on a GPU, CKA's time is the host launching small operations."""
        kernels, diagonals, varied, bandwidth = [], [], [], []
        for x, name in zip(feats, names):
            if id(x) not in cache:  # a tensor on both sides (a network with itself) is done once
                gram, varies = features_gram(x, name, gram_precision(self.gram, x.device, x.dtype))
                cache[id(x)] = (*kernel_matrix(gram, varies, self.kernel, self.sigma), gram.diagonal(), varies)
            kernel, bandwidth_ok, diagonal, varies = cache[id(x)]
            kernels.append(kernel)
            diagonals.append(diagonal)
            varied.append(varies)
            bandwidth.append(bandwidth_ok)
        device = self.state[f"varied_{side}"].device
        varied = torch.stack(varied)
        self.state[f"varied_{side}"] |= varied.to(device)
        self.state[f"finite_{side}"] &= torch.isfinite(torch.stack(diagonals)).all(1).to(device)
        if self.kernel != "linear":
            self.state[f"bandwidth_{side}"] &= torch.stack(bandwidth).to(device)
        V = torch.stack(kernels)  # (layers, n, n), a copy: the kernels (and the diagonals' Grams) stay intact
        V.mul_(varied[:, None, None])  # constant features: an exact zero kernel
        V.diagonal(dim1=1, dim2=2).zero_()  # K~
        R = V.sum(2)
        return V.view(V.shape[0], -1), R, R.sum(1)

    def update(self, feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor]) -> None:
        """Add one batch: ``feats_a[k]`` is layer k of side a on the batch, ``(B, ...)``; same B everywhere."""
        feats_a, feats_b = list(feats_a), list(feats_b)
        if len(feats_a) != len(self.names_a) or len(feats_b) != len(self.names_b):
            raise ValueError(f"expected {len(self.names_a)} + {len(self.names_b)} layers per batch, got "
                             f"{len(feats_a)} + {len(feats_b)}")
        n = _batch_size(feats_a + feats_b, self.names_a + self.names_b)
        if n < MIN_BATCH:
            raise ValueError(f"a minibatch of {n} examples (layer {self.names_a[0]}) is too small for the unbiased "
                             f"HSIC estimator, which divides by n-3: use batches of at least {MIN_BATCH}, and fold "
                             f"a short last batch into the one before it")
        state = self._start(feats_a[0].device)
        cache: dict[int, tuple] = {}
        Va, Ra, Sa = self._stats(feats_a, self.names_a, "a", cache)
        Vb, Rb, Sb = self._stats(feats_b, self.names_b, "b", cache)
        c1, c2, c3 = 1.0 / ((n - 1) * (n - 2)), 2.0 / (n - 2), 1.0 / (n * (n - 3))
        # HSIC1 of every (a, b) pair: one matmul of the stacked vec(K~) per batch; nothing leaves the
        # device until result(), so a GPU never waits for the host.
        state["cross"] += ((Va @ Vb.T + c1 * torch.outer(Sa, Sb) - c2 * (Ra @ Rb.T)) * c3).to(state["cross"].device)
        for side, V, R, S in (("a", Va, Ra, Sa), ("b", Vb, Rb, Sb)):  # the diagonal only
            state[f"self_{side}"] += ((V * V).sum(1) + c1 * S * S - c2 * (R * R).sum(1)).mul(c3).to(
                state[f"self_{side}"].device)
        self.n_examples += n
        self.n_batches += 1

    def result(self) -> torch.Tensor:
        """CKA ``(n_a, n_b)`` in float64 (on the CPU) of every batch so far."""
        if self.n_batches == 0:
            raise ValueError("no batch was added: call update(feats_a, feats_b) at least once before result()")
        state = {k: v.cpu() for k, v in self.state.items()}
        over = f"{self.n_batches} minibatch(es)"
        for side, names in (("a", self.names_a), ("b", self.names_b)):
            _check_self(state[f"self_{side}"], state[f"varied_{side}"], state[f"finite_{side}"], names, over,
                        state[f"bandwidth_{side}"])
        return state["cross"] / torch.sqrt(torch.outer(state["self_a"], state["self_b"]))


def _names(names: Sequence[str] | None, count: int, side: str) -> list[str]:
    if names is None:
        return [f"{side}[{k}]" for k in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"names_{side} has {len(names)} names for {count} layers; give one name per layer or None")
    return names


def _batch_size(feats: list[torch.Tensor], names: list[str]) -> int:
    """The shared first dimension of every feature tensor."""
    for x, name in zip(feats, names):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"features of {name} must be a torch.Tensor (examples first), got {type(x).__name__}")
    n = feats[0].shape[0] if feats[0].dim() else 0
    for x, name in zip(feats, names):
        if x.dim() == 0 or x.shape[0] != n:
            raise ValueError(f"layer {name} has {x.shape[0] if x.dim() else 0} examples but layer {names[0]} has {n}: "
                             f"every layer must be computed on the same examples (the first dimension)")
    return n


def _check_self(self_hsic: torch.Tensor, varied, finite, names: list[str], over: str, bandwidth) -> None:
    """CKA divides by the self-HSICs: refuse, naming the layer, where one is not positive (or
    where an RBF kernel had no bandwidth)."""
    for value, varies, is_finite, has_bandwidth, name in zip(self_hsic.tolist(), list(varied), list(finite),
                                                             list(bandwidth), names):
        if not bool(is_finite):
            raise ValueError(f"features of {name} contain NaN or infinite values; CKA is undefined for them")
        if not bool(varies):
            raise ValueError(f"CKA is undefined for layer {name}: its features are the same for every example "
                             f"(constant features, zero self-HSIC); leave this layer out")
        if not bool(has_bandwidth):
            raise ValueError(f"the RBF kernel of {name} is undefined: more than half of its pairwise distances are "
                             f"0 (many identical examples{'' if over.endswith('examples') else ' in a batch'}), so "
                             f"the median distance sets a bandwidth of 0; use the linear kernel or more varied "
                             f"inputs")
        if not value > 0:
            raise ValueError(f"CKA is undefined for layer {name}: its self-HSIC estimate over {over} is {value:.3g}, "
                             f"not positive; use more examples or larger batches")


def minibatch_spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` batches; a last batch of fewer than 4 joins the one before it."""
    spans = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < MIN_BATCH:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


def check_minibatch(batch_size, n: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < MIN_BATCH:
        raise ValueError(f"batch_size must be an integer of at least {MIN_BATCH} (the unbiased HSIC divides by n-3), "
                         f"got {batch_size!r}")
    if n < MIN_BATCH:
        raise ValueError(f"minibatch CKA needs at least {MIN_BATCH} examples, got {n}")


# --- CKA of given features ----------------------------------------------------------------------
def cka_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], kernel: str = "linear",
               batch_size: int | None = None, sigma: float = 0.8, names_a: Sequence[str] | None = None,
               names_b: Sequence[str] | None = None, gram: str = "auto") -> torch.Tensor:
    """CKA between every layer in ``feats_a`` and every layer in ``feats_b``.

    Args:
        feats_a, feats_b: tensors ``(n, ...)`` of the same n examples; each is flattened per
            example to ``(n, p)``.
        kernel: ``"linear"`` or ``"rbf"``.
        batch_size: ``None`` for full-batch CKA (biased HSIC; holds one ``(n, n)`` kernel per
            layer), or an integer >= 4 for minibatch CKA over consecutive batches of that size (a
            last batch of fewer than 4 examples is folded into the one before it).
        sigma: RBF bandwidth as a fraction of the median pairwise distance (per batch).
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).
        gram: the Gram matrices' precision, as in :class:`MinibatchCKA`.

    Returns:
        float64 ``(len(feats_a), len(feats_b))`` on the CPU; rows are the layers of a.

    Example::

        >>> x = torch.randn(100, 16, 4, 4)
        >>> cka_matrix([x], [x, 2 * x + 1])
        tensor([[1., 1.]], dtype=torch.float64)
    """
    check_kernel(kernel, sigma)
    gram_precision(gram, "cpu")  # refuses an unknown name
    feats_a, feats_b = list(feats_a), list(feats_b)
    if not feats_a or not feats_b:
        raise ValueError(f"CKA needs at least one layer on each side, got {len(feats_a)} and {len(feats_b)}")
    names_a, names_b = _names(names_a, len(feats_a), "a"), _names(names_b, len(feats_b), "b")
    n = _batch_size(feats_a + feats_b, names_a + names_b)
    if batch_size is None:
        return _full_batch(feats_a, feats_b, kernel, sigma, names_a, names_b, gram)
    check_minibatch(batch_size, n)
    acc = MinibatchCKA(len(feats_a), len(feats_b), kernel, sigma, names_a, names_b, gram)
    for start, stop in minibatch_spans(n, batch_size):
        cut: dict[int, torch.Tensor] = {}  # slice each distinct tensor once, so a shared one stays shared
        acc.update([cut.setdefault(id(x), x[start:stop]) for x in feats_a],
                   [cut.setdefault(id(x), x[start:stop]) for x in feats_b])
    return acc.result()


def _full_batch(feats_a, feats_b, kernel, sigma, names_a, names_b, precision: str) -> torch.Tensor:
    """Kornblith et al.'s CKA with HSIC0 = tr(KHLH)/(n-1)^2, all pairs with one matmul."""
    n = feats_a[0].shape[0]
    if n < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {n}")
    cache: dict[int, tuple] = {}

    def centred_kernels(feats, names):
        kernels, varied, finite, bandwidth = [], [], [], []
        for x, name in zip(feats, names):
            if id(x) not in cache:
                gram, varies = features_gram(x, name, gram_precision(precision, x.device, x.dtype))
                is_finite = torch.isfinite(gram.diagonal()).all()
                K, bandwidth_ok = kernel_matrix(gram, varies, kernel, sigma)
                K.mul_(varies)  # constant features: an exact zero kernel
                if bandwidth_ok is None:  # the linear kernel needs no bandwidth
                    bandwidth_ok = torch.ones((), dtype=torch.bool, device=K.device)
                row_mean = K.mean(1, keepdim=True)  # K is symmetric: column means are row_mean.T
                K.sub_(row_mean).sub_(row_mean.T).add_(row_mean.mean())  # H K H, in place (K can be large)
                cache[id(x)] = (K.reshape(-1), varies, is_finite, bandwidth_ok)
            for out, value in zip((kernels, varied, finite, bandwidth), cache[id(x)]):
                out.append(value)
        return kernels, varied, finite, bandwidth

    # No stacking here: at n = 10,000 one kernel is 800 MB, so pairs are dot products of views.
    (Ka, varied_a, finite_a, bandwidth_a), (Kb, varied_b, finite_b, bandwidth_b) = (
        centred_kernels(feats_a, names_a), centred_kernels(feats_b, names_b))
    scale = 1.0 / (n - 1) ** 2  # HSIC0 = tr(HKH HLH) / (n-1)^2 = <vec HKH, vec HLH> / (n-1)^2

    def hsic(rows, cols):  # (len(rows), len(cols)) on the CPU
        return torch.tensor([[torch.dot(r, c).item() * scale for c in cols] for r in rows], dtype=torch.float64)

    self_a = torch.tensor([torch.dot(k, k).item() * scale for k in Ka], dtype=torch.float64)
    self_b = torch.tensor([torch.dot(k, k).item() * scale for k in Kb], dtype=torch.float64)
    _check_self(self_a, varied_a, finite_a, names_a, f"{n} examples", bandwidth_a)
    _check_self(self_b, varied_b, finite_b, names_b, f"{n} examples", bandwidth_b)
    return hsic(Ka, Kb) / torch.sqrt(torch.outer(self_a, self_b))
