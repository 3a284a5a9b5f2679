"""Least-squares stitches: fit the linear part of a stitch to the receiver's own activation.

The normal equations are accumulated batch by batch in float64 (``XᵀX``, ``XᵀY``, column
sums and the row count, so the bias needs no extra column in memory) and solved once.
Csiszárik et al. (2021) use such a solution as the starting point of task-loss training.
"""

from __future__ import annotations

import torch

from core.errors import LstsqTooLarge

__all__ = ["NormalEquations", "MAX_LSTSQ_INPUTS", "LstsqTooLarge"]

MAX_LSTSQ_INPUTS = 8192  # XᵀX of 8192 inputs is 512 MB in float64; beyond that, train instead


class NormalEquations:
    """Running ``XᵀX``, ``Xᵀ1``, ``XᵀY``, ``Yᵀ1`` and ``n`` for ``Y ≈ X W + b``.

    ``gram`` may be shared between several instances with the same ``X`` (the same sender
    layer and resampling): pass the first one's ``gram`` to the others, and let only one of
    them call :meth:`add_gram`.
    """

    def __init__(self, d_in: int, d_out: int, device, gram: dict | None = None):
        if d_in > MAX_LSTSQ_INPUTS:
            raise LstsqTooLarge(f"least squares needs a {d_in} x {d_in} system, over the {MAX_LSTSQ_INPUTS} "
                                f"limit; train this stitch with the task loss instead (mode 'train')")
        self.gram = gram if gram is not None else {
            "xtx": torch.zeros(d_in, d_in, dtype=torch.float64, device=device),
            "xsum": torch.zeros(d_in, dtype=torch.float64, device=device),
            "n": 0,
        }
        self.xty = torch.zeros(d_in, d_out, dtype=torch.float64, device=device)
        self.ysum = torch.zeros(d_out, dtype=torch.float64, device=device)

    def add_gram(self, x: torch.Tensor) -> None:
        """Add rows ``x`` (rows, d_in) to the shared ``XᵀX`` part."""
        x = x.double()
        self.gram["xtx"].addmm_(x.T, x)
        self.gram["xsum"] += x.sum(0)
        self.gram["n"] += x.shape[0]

    def add_cross(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``x`` (rows, d_in) and their targets ``y`` (rows, d_out) to ``XᵀY``."""
        if x.shape[0] != y.shape[0]:
            raise AssertionError(f"{x.shape[0]} design rows but {y.shape[0]} target rows")
        self.xty.addmm_(x.double().T, y.double())
        self.ysum += y.double().sum(0)

    def augmented_gram(self) -> torch.Tensor:
        """``[[XᵀX, Xᵀ1], [1ᵀX, n]]`` (float64, a new tensor): the Gram of the rows with a 1
        appended for the bias."""
        xtx, xsum, n = self.gram["xtx"], self.gram["xsum"], self.gram["n"]
        if n == 0:
            raise ValueError("least squares saw no data")
        d = xtx.shape[0]
        a = torch.empty(d + 1, d + 1, dtype=torch.float64, device=xtx.device)
        a[:d, :d], a[:d, d], a[d, :d], a[d, d] = xtx, xsum, xsum, n
        return a

    def solve(self, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (d_out, d_in), bias (d_out,))`` in float32, minimising the squared error.

        A ridge of ``ridge`` x the mean diagonal keeps rank-deficient systems (dead ReLU
        channels, constant pixels) solvable without noticeably biasing well-posed ones.
        """
        d = self.gram["xtx"].shape[0]
        a = self.augmented_gram()  # [[XᵀX, Xᵀ1], [1ᵀX, n]] [W; b] = [XᵀY; 1ᵀY]
        rhs = torch.cat([self.xty, self.ysum[None]], 0)
        scale = a.diagonal().mean().clamp_min(1e-12)
        a.diagonal().add_(ridge * scale)
        solution = torch.linalg.solve(a, rhs)  # (d + 1, d_out)
        return solution[:d].T.float().contiguous(), solution[d].float()
