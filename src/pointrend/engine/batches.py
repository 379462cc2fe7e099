"""The batches of a training run: which images each process trains on at each step, how they
travel to the device.

:func:`epoch_batches` is the data order (a ``DistributedSampler`` per epoch, a function of the
seed and the epoch), :class:`RunBatchSampler` walks it from any step (exact resume, gradient
accumulation), :class:`SeededItems` makes augmentation a function of (seed, epoch, image), and
the images cross to the device as uint8 (:class:`QuantizedCollate`, :func:`move_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, default_collate

from .distributed import get_rank, get_world_size

__all__ = [
    "epoch_batches",
    "RunBatchSampler",
    "SeededItems",
    "item_seed",
    "quantize_images",
    "QuantizedCollate",
    "move_batch",
]


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch`` (a DistributedSampler per epoch).

    With ``W`` ranks and per-rank batch ``B``, batch ``j`` of all ranks together is the same set
    of images as batch ``j`` of one process with batch ``W * B``.
    """
    world, rank = get_world_size(), get_rank()
    if num_items < batch_size * world:
        raise ValueError(
            f"the dataset has {num_items} items, fewer than one global batch ({batch_size * world})"
        )
    sampler = DistributedSampler(
        range(num_items), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    n = len(indices) // batch_size
    return [indices[i * batch_size : (i + 1) * batch_size] for i in range(n)]


class RunBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's micro-batches for optimizer steps ``start`` to ``stop``, epoch after epoch.

    Step ``i`` of epoch ``e`` takes micro-batches ``i * A`` to ``i * A + A - 1`` (``A`` =
    ``accumulate``) of :func:`epoch_batches` for ``e``, so the images of a step are those of a
    run without accumulation. Each item is ``(index, item_seed)``: the seed the augmentation of
    that image draws from in that epoch (:class:`SeededItems`).
    """

    def __init__(self, num_items, batch_size, seed, start, stop, accumulate=1):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.accumulate = start, stop, accumulate
        self.steps_per_epoch = len(epoch_batches(num_items, batch_size, seed, 0)) // accumulate

    def __len__(self) -> int:
        return max(self.stop - self.start, 0) * self.accumulate

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches, batches_epoch = [], None
        for it in range(self.start, self.stop):
            epoch, offset = divmod(it, self.steps_per_epoch)
            if epoch != batches_epoch:
                batches = epoch_batches(self.num_items, self.batch_size, self.seed, epoch)
                batches_epoch = epoch
            for k in range(offset * self.accumulate, (offset + 1) * self.accumulate):
                yield [(i, item_seed(self.seed, epoch, i)) for i in batches[k]]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of item ``index`` in ``epoch`` of a run seeded ``seed``."""
    return (seed * 1_000_003 + epoch * 10_007 + index) % 2**63


class SeededItems(Dataset):
    """``dataset[index]`` drawn with the torch RNG seeded by the item's seed, the global RNG
    left as it was: augmentation is a function of (seed, epoch, image), not of which worker
    loaded it or of whether the run was resumed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU's only, not the GPUs'
            return self.dataset[index]


def quantize_images(images):
    """Float images in ``[0, 1]`` as uint8 (a quarter of the bytes to copy to the device; the
    device divides by 255 again, :func:`move_batch`); anything else is returned as it is."""
    if isinstance(images, list | tuple):
        return type(images)(quantize_images(x) for x in images)
    if not torch.is_tensor(images) or not images.is_floating_point() or images.numel() == 0:
        return images
    lo, hi = torch.aminmax(images)
    if not (torch.isfinite(lo) and torch.isfinite(hi) and lo >= 0 and hi <= 1):
        return images  # left for the model's input check to name
    return images.mul(255).round_().to(torch.uint8)


class QuantizedCollate:
    """``collate_fn`` whose images (the first element of each batch) travel as uint8."""

    def __init__(self, collate_fn: Callable | None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, batch):
        images, targets = self.collate_fn(batch)
        return quantize_images(images), targets


def move_batch(obj, device: torch.device, images: bool = False):
    """``obj`` on ``device``; with ``images``, uint8 tensors become float in ``[0, 1]`` there."""
    if torch.is_tensor(obj):
        obj = obj.to(device, non_blocking=True)
        return obj.float().div_(255) if images and obj.dtype == torch.uint8 else obj
    if isinstance(obj, dict):
        return {k: move_batch(v, device, images) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(move_batch(v, device, images) for v in obj)
    return obj
