"""Preconditioned stitch training: each stitch's gradient times the inverse Gram of its input.

A stitch's linear part ``y = W x + b`` trained by SGD moves fastest along the directions in which
its input ``x`` varies most; at other layers the input's scale and correlations differ by orders
of magnitude, so no single learning rate suits every cell of a grid (issue 17: at 2,000 images an lr
that trained R2222's layer1.1 well broke R1111's stem). Multiplying the gradient of ``[W, b]`` by
``A⁻¹``, with ``A = E[z zᵀ]`` and ``z = [x; 1]``, makes every direction of the input equally fast:
the input-side factor of K-FAC (Martens & Grosse 2015), exact Newton for a squared loss.
``A`` is the Gram least squares already accumulates (:meth:`core.engine.lstsq.NormalEquations.augmented_gram`),
so a preconditioned recipe must start from least squares. ``A⁻¹`` is divided by ``d + 1`` so that
``E[zᵀ A⁻¹ z] / (d + 1) = 1``: one learning rate means the same step for a 16-input and a
1,024-input stitch.

Written here because torch has no K-FAC, and a K-FAC library would estimate ``A`` again from the
training batches (this one is already exact, from 10,000 images). Measured on 2 CPU cores
(BENCHMARKS.md, "Quick recipe frontier"): SGD with it reaches the seed check where plain SGD did not.
"""

from __future__ import annotations

import torch

__all__ = ["input_preconditioner", "precondition_gradient_", "MAX_PRECONDITIONED_INPUTS"]

# A (d + 1)² float32 matrix per distinct stitch input: 64 MB at 4,096 inputs. Larger stitches
# (ImageNet networks' k x k patches) train with their plain gradient.
MAX_PRECONDITIONED_INPUTS = 4096


def input_preconditioner(augmented_gram: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``(A + ridge · mean(diag A) · I)⁻¹ / (d + 1)`` as float32, where ``A`` is ``augmented_gram``
    (``[[XᵀX, Xᵀ1], [1ᵀX, n]]``, see :mod:`core.engine.lstsq`) divided by its row count ``n``.

    The ridge keeps the inverse finite where an input never varies (a dead ReLU channel): the
    gradient has no component there, so the large entry it gets multiplies nothing."""
    a = augmented_gram.double() / augmented_gram[-1, -1].clamp_min(1)
    a.diagonal().add_(ridge * a.diagonal().mean().clamp_min(1e-12))
    return (torch.linalg.inv(a) / a.shape[0]).float()


def precondition_gradient_(stitch, preconditioner: torch.Tensor) -> None:
    """Replace the gradient of ``stitch``'s linear part (weight and bias, as computed by backward)
    with ``[∇W, ∇b] @ preconditioner``, in the row order of
    :meth:`core.engine.stitches.Stitch.row_weight` (the order of the least-squares rows)."""
    weight, bias = stitch.linear.weight, stitch.linear.bias
    if weight.grad is None or bias.grad is None:
        return
    grad = weight.grad
    if grad.dim() == 4:  # conv (C', C, k, k) -> (C', k, k, C): the patches' order
        rows = grad.permute(0, 2, 3, 1).reshape(grad.shape[0], -1)
    else:
        rows = grad
    with torch.no_grad():
        scaled = torch.cat([rows, bias.grad[:, None]], 1) @ preconditioner.to(rows.dtype)
        new_rows = scaled[:, :-1]
        if grad.dim() == 4:
            c_out, c_in, k, _ = grad.shape
            new_rows = new_rows.reshape(c_out, k, k, c_in).permute(0, 3, 1, 2)
        grad.copy_(new_rows.reshape(grad.shape))
        bias.grad.copy_(scaled[:, -1])
