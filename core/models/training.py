"""Training the classifiers of the model zoo (``python -m core zoo train``).

One recipe for every zoo model: SGD with Nesterov momentum, a one-cycle learning rate,
random translations of up to 4 pixels and horizontal flips, done on the device so the
whole dataset can stay there. bf16 autocast and channels_last on CUDA; fp32 on CPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.data.datasets import ImageSet
from core.device import autocast_for

__all__ = ["Recipe", "train_classifier", "accuracy"]


@dataclass
class Recipe:
    epochs: int = 15  # enough for >= 92 % on Fashion-MNIST for every zoo architecture
    batch_size: int = 256
    lr: float = 0.1  # peak of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: int = 4  # random translation, pixels
    flip: bool = True  # clothing is left-right symmetric enough; CIFAR-10 too

    def to_dict(self) -> dict:
        return asdict(self)


def _augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero fill) and random horizontal flips."""
    b, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        x = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def accuracy(net, data: ImageSet, device: torch.device, batch_size: int = 1000) -> float:
    """Top-1 accuracy in fp32 (no autocast), so CPU and GPU agree to within rounding."""
    correct = 0
    with torch.no_grad():
        for images, labels in data.batches(batch_size, device):
            correct += (net(images).argmax(-1) == labels).sum().item()
    return correct / len(data)


def train_classifier(net, train: ImageSet, test: ImageSet, recipe: Recipe, device: torch.device, seed: int,
                     log=print) -> list[dict]:
    """Train ``net`` (a :class:`core.models.network.Network` whose module is trainable) in place.

    Returns the per-epoch history ``[{"epoch", "loss", "train_accuracy", "test_accuracy", "seconds"}]``.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    module: nn.Module = net.module.to(device)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(module.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=True)
    steps_per_epoch = -(-len(train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    train_dev = train.to(device)
    history = []
    for epoch in range(1, recipe.epochs + 1):
        module.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for images, labels in train_dev.batches(recipe.batch_size, device, shuffle=True, generator=generator):
            x = net.prepare(_augment(images, recipe.shift, recipe.flip, generator))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device):
                logits = module(x)
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(-1) == labels).sum()
        module.eval()
        test_acc = accuracy(net, test, device)
        row = {"epoch": epoch, "loss": round(loss_sum.item() / len(train), 4),
               "train_accuracy": round(correct.item() / len(train), 4), "test_accuracy": round(test_acc, 4),
               "seconds": round(time.perf_counter() - start, 2)}
        history.append(row)
        log(f"  epoch {epoch:>2}/{recipe.epochs}  loss {row['loss']:.4f}  train {row['train_accuracy']:.4f}  "
            f"test {row['test_accuracy']:.4f}  ({row['seconds']:.1f}s)")
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if device.type == "cuda":
        module.to(memory_format=torch.contiguous_format)
    return history
