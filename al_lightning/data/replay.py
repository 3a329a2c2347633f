"""Replay frames mixed into every training epoch (the data side of ``model.replay``, model/replay.py).

:class:`ReplayMix` is the labeled set followed by ``m`` replay frames drawn afresh each epoch
(seeded by seed and epoch; without replacement while the replay set is large enough);
:class:`MixSampler` is torch's DistributedSampler that also tells the dataset the epoch
(Lightning calls ``set_epoch`` on the train sampler before every epoch).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


class ReplayMix(Dataset):
    """Items ``0 … n_labeled − 1``: the labeled set; then ``m`` replay frames of this epoch."""

    def __init__(self, labeled: Dataset, replay: Dataset, m: int, seed: Sequence[int]) -> None:
        self.labeled, self.replay, self.m, self.seed = labeled, replay, int(m), list(seed)
        self.n_labeled = len(labeled)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([*self.seed, int(epoch)])
        self.drawn = rng.choice(len(self.replay), size=self.m, replace=self.m > len(self.replay))

    def __len__(self) -> int:
        return self.n_labeled + self.m

    def __getitem__(self, i: int):
        return self.labeled[i] if i < self.n_labeled else self.replay[int(self.drawn[i - self.n_labeled])]


class MixSampler(DistributedSampler):
    """torch's DistributedSampler (seeded per-epoch shuffle, padded to equal rank counts) that draws
    the dataset's replay frames for the epoch first."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
