"""LightningDataModules that serve latents z as batches ``{"z": (B, C, h, w), "index": (B,)}``.

``LatentDataModule`` reads the on-disk cache written by :mod:`meg_lightning.data.cache`
(``setup`` only reads; ``prepare_data`` generates what is missing). ``TensorLatentDataModule``
serves latents already in memory (synthetic latents in tests, or a user's own tensors) with the
same batches and the same deterministic split.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from meg_lightning.data.cache import LatentCache
from meg_lightning.errors import ConfigError


class LatentDataset(Dataset):
    """Latents ``z`` (N, C, h, w) indexed by ``indices`` (positions in the full cache)."""

    def __init__(self, z: torch.Tensor, indices: Sequence[int]):
        self.z = z
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        return {"z": self.z[j].float(), "index": torch.tensor(j)}


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int
                  ) -> dict[str, list[int]]:
    """Deterministic train/val/test split of ``range(n)`` (a seeded permutation)."""
    if n <= 0:
        raise ConfigError("data.num_prompts", n, "a positive number of cached latents")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n - n_test - n_val <= 0:
        raise ConfigError("data.val_fraction+data.test_fraction", val_fraction + test_fraction,
                          f"fractions leaving at least one training sample out of {n}")
    return {"test": sorted(perm[:n_test]), "val": sorted(perm[n_test:n_test + n_val]),
            "train": sorted(perm[n_test + n_val:])}


class TensorLatentDataModule(L.LightningDataModule):
    """Serve in-memory latents ``z`` (N, C, h, w) with a deterministic split."""

    def __init__(self, z: torch.Tensor, batch_size: int = 8, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 0, num_workers: int = 0):
        super().__init__()
        if z.ndim != 4:
            raise ConfigError("z.shape", tuple(z.shape), "(N, C, h, w)")
        self.z = z
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits = split_indices(len(z), val_fraction, test_fraction, split_seed)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.z.shape[1:])  # type: ignore[return-value]

    def dataset(self, split: str) -> LatentDataset:
        return LatentDataset(self.z, self.splits[split])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


class LatentDataModule(TensorLatentDataModule):
    """Latents from the on-disk cache; ``setup`` only reads (memory-mapped).

    ``prepare_data`` generates the missing latents when ``generate=True``; by default it only
    checks that the cache holds them (settings, count, checksums) and otherwise says to run
    `meg latents`: training and evaluation never start SD generation (GPU work) on their own.
    """

    def __init__(self, cfg, generate: bool = False):
        L.LightningDataModule.__init__(self)

        self.cfg, self.generate = cfg, generate
        self.cache = LatentCache(cfg)
        d = cfg.data
        self.batch_size, self.num_workers = d.batch_size, d.num_workers
        self.splits = split_indices(d.num_prompts, d.val_fraction, d.test_fraction, d.split_seed)
        self.z = None

    def prepare_data(self) -> None:
        if self.generate:
            self.cache.build()
        self.z = self.cache.open()

    def setup(self, stage: str | None = None) -> None:
        if self.z is None:
            self.z = self.cache.open()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        self.setup()
        return tuple(self.z.shape[1:])  # type: ignore[return-value]

    def dataset(self, split: str) -> LatentDataset:
        self.setup()
        return LatentDataset(self.z, self.splits[split])


def build_datamodule(cfg, generate: bool = False) -> LatentDataModule:
    """The cache-backed datamodule for ``cfg`` (``cfg.data`` + the generation settings)."""
    return LatentDataModule(cfg, generate=generate)
