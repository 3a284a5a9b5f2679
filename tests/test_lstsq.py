import pytest
import torch

from core.engine.lstsq import LstsqTooLarge, NormalEquations


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


def test_token_stitches_into_different_token_counts_do_not_share_a_gram():
    # Two receivers with the same width but 6 and 3 tokens: the sender's tokens are resampled to
    # each count, so the two least-squares systems have different design rows.
    from torch import nn

    from core.data.datasets import FASHION_MNIST, ImageSet
    from core.engine.fused import Cell, FusedStitches
    from core.engine.layers import resolve_layer
    from core.engine.stitches import make_stitch
    from core.models.network import Network

    class Tokens(nn.Module):  # (B, 1, 8, 8) -> (B, T, 4) tokens -> 10 classes
        def __init__(self, count):
            super().__init__()
            self.count, self.embed, self.mix = count, nn.Linear(64, count * 4), nn.Linear(4, 4)
            self.head = nn.Linear(count * 4, 10)

        def forward(self, x):
            return self.head(self.mix(self.embed(x.flatten(1)).view(x.shape[0], self.count, 4)).flatten(1))

    def network(name, count, seed):
        torch.manual_seed(seed)
        module = Tokens(count).eval().requires_grad_(False)
        return Network(name, module, (1, 8, 8), 10, (0.0,), (1.0,), {})

    sender, six, three = network("s", 6, 0), network("r6", 6, 1), network("r3", 3, 2)
    torch.manual_seed(0)
    data = ImageSet((torch.rand(512, 1, 8, 8) * 255).to(torch.uint8), torch.randint(0, 10, (512,)),
                    FASHION_MNIST, "train")
    layer = resolve_layer(sender, "mix")

    def fitted(receivers):
        cells = [Cell(sender, r, layer, resolve_layer(r, "mix"), make_stitch(layer.shape, resolve_layer(r, "mix").shape,
                                                                             seed=0)) for r in receivers]
        FusedStitches(cells, torch.device("cpu"), fold_bn=False).fit_lstsq(data, 128, 0, 10**6)
        return [c.stitch.linear.weight for c in cells]

    alone = fitted([three])[0]
    assert torch.allclose(fitted([six, three])[1], alone, atol=1e-5)
    assert torch.allclose(fitted([three, six])[0], alone, atol=1e-5)
