import pytest
import torch

from core.lstsq import LstsqTooLarge, NormalEquations


def test_recovers_an_exact_linear_map_batch_by_batch():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(5, 7, generator=g), torch.randn(5, generator=g)
    system = NormalEquations(7, 5, "cpu")
    for _ in range(4):
        x = torch.randn(100, 7, generator=g) * 1000 + 300  # large, offset values: float64 keeps them exact
        system.add_gram(x)
        system.add_cross(x, x @ w.T + b)
    weight, bias = system.solve(ridge=0.0)
    assert torch.allclose(weight, w, atol=1e-4) and torch.allclose(bias, b, atol=1e-2)


def test_shared_gram_and_size_limit():
    g = torch.Generator().manual_seed(1)
    first = NormalEquations(3, 2, "cpu")
    second = NormalEquations(3, 4, "cpu", gram=first.gram)
    x = torch.randn(50, 3, generator=g)
    first.add_gram(x)
    first.add_cross(x, x[:, :2])
    second.add_cross(x, torch.cat([x, x[:, :1]], 1))
    assert torch.allclose(second.solve()[0][:3], torch.eye(3), atol=1e-4)
    with pytest.raises(LstsqTooLarge, match="mode 'train'"):
        NormalEquations(10_000, 2, "cpu")
    with pytest.raises(ValueError, match="no data"):
        NormalEquations(3, 2, "cpu").solve()
