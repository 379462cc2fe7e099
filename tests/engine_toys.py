"""A toy task for engine tests: a tiny conv net whose loss uses the global RNG, on random data;
and the environment of a process of a local multi-process (gloo) run."""

import os
import socket

import torch
from torch import nn
from torch.utils.data import Dataset


class ToyDataset(Dataset):
    def __init__(self, n=24, random_flip=True):
        self.random_flip = random_flip
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 8, 8, generator=g)
        self.labels = (self.images.mean(1) > 0.5).long()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image, label = self.images[i], self.labels[i]
        if (
            self.random_flip and torch.rand(()) < 0.5
        ):  # a random flip drawn from the global RNG, as augmentation does
            image, label = image.flip(-1), label.flip(-1)
        return image, label


def toy_collate(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


class ToyModel(nn.Module):
    def __init__(self, random_points=True):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.random_points = random_points
        self.nan_at_call = None
        self.calls = 0

    def forward(self, images, targets):
        self.calls += 1
        logits = self.conv(images)
        loss = nn.functional.cross_entropy(logits, targets, reduction="none")
        if self.random_points:  # a random subset of pixels, like PointRend's point sampling
            keep = torch.rand(loss.shape) < 0.5
            loss = (loss * keep).sum() / keep.sum().clamp(min=1)
        else:
            loss = loss.mean()
        aux = logits.pow(2).mean() * 0.01
        if self.nan_at_call is not None and self.calls == self.nan_at_call:
            aux = aux * float("nan")
        return {"loss_ce": loss, "loss_aux": aux}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_process(rank: int, world: int, port: int) -> None:
    """The environment ``torchrun`` gives process ``rank`` of ``world`` on this machine."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
