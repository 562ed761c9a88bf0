"""What `meg eval` loads and where from: the data (and its test latents), the decoder D, codecs,
the linear code, the judge, channels, and the scratch store of the perfect images I_0. Each can
be injected into :func:`meg_lightning.evaluation.sweep.run_sweep` instead (tests, notebooks)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from meg_lightning.channels import build as build_channel
from meg_lightning.codecs import LinearCode
from meg_lightning.config import MegConfig
from meg_lightning.data import build_datamodule
from meg_lightning.data.prompts import get_prompts
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.generation import load_vae, resolve_device
from meg_lightning.mini.classifier import prompt_judge


def _device(cfg: MegConfig) -> torch.device:
    return resolve_device(cfg.generation.device)


def _default_vae(cfg: MegConfig, device: torch.device):
    return load_vae(cfg, device=device)


def _default_datamodule(cfg: MegConfig):
    dm = build_datamodule(cfg)
    dm.prepare_data()  # checks the cache (settings, count, checksums); `meg latents` builds it
    dm.setup("test")
    return dm


def test_latents(dm, n: Optional[int]) -> tuple[Tensor, Tensor]:
    """The first n test latents z (n, C, h, w) and their cache indices (n,); all when n is None."""
    ds = dm.dataset("test")
    if len(ds) == 0:
        raise UserError("the test split of the latent cache is empty: expected data.test_fraction "
                        "* data.num_prompts >= 1")
    items = [ds[i] for i in range(len(ds) if n is None else min(n, len(ds)))]
    return torch.stack([it["z"] for it in items]), torch.stack([it["index"] for it in items])


def check_num_images(cfg: MegConfig, available: int) -> int:
    """The test images per cell: ``eval.num_images``, or the whole test split when it is null. A
    number larger than the test split is an error (FID over fewer images than asked is another
    metric)."""
    n = cfg.eval.num_images
    if n is None:
        return available
    if available < n:
        raise ConfigError("eval.num_images", n, f"at most {available}, the size of the test split "
                          "(raise data.num_prompts or data.test_fraction, or leave it null)")
    return n


def train_latents(dm) -> Tensor:
    """All training latents (N, C, h, w): what the linear code and the OPTA spectrum are fitted on."""
    ds = dm.dataset("train")
    return torch.stack([ds[i]["z"] for i in range(len(ds))])


def _default_linear(fc: float, z_train: Tensor, device):
    """The optimal linear analog code of rate fc (codecs.LinearCode) fitted on training latents."""
    return LinearCode.fit(z_train, fc).to(device)


def latent_spectrum(z_train: Tensor) -> np.ndarray:
    """All |z| eigenvalues of the training latents' sample covariance (descending, zero-padded)."""
    lam = LinearCode.fit(z_train, 1.0).eigvals
    return np.pad(lam, (0, z_train[0].numel() - lam.size))


def _default_judge(cfg: MegConfig, extractor: Any = None
                   ) -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """For model ``mini``: (images, cache indices) -> (b,) bool, whether each image's five
    attributes all match its prompt (:func:`~meg_lightning.mini.classifier.prompt_judge`); None
    for other models."""
    if cfg.model != "mini":
        return None
    return prompt_judge(get_prompts(cfg.data.prompts, cfg.data.num_prompts,
                                    cfg.data.prompt_column), extractor)


def judge_batch(judge: Callable[[Tensor, Tensor], Tensor], images: Tensor, index: Tensor,
                extractor: Any = None, features: Optional[Tensor] = None) -> Tensor:
    """``judge(images, index)`` as (b,) bool on the CPU, from ``features`` (``extractor``'s of
    these images) when the judge reads that extractor's features (see :func:`_default_judge`)."""
    if features is not None and extractor is not None and \
            getattr(judge, "features_of", None) is extractor:
        return judge.from_features(features, index).cpu()
    return judge(images, index).cpu()


def default_channel(cfg: MegConfig, kind: str, snr_db: float):
    """The cell's link: channel model ``kind`` at ``snr_db`` with ``channel.*``'s blocks,
    equaliser and the model's own settings (the noiseless channel gets a finite placeholder)."""
    return build_channel(cfg, kind, snr_db=snr_db if math.isfinite(snr_db) else 0.0,
                         normalize=True)


class ImageStore:
    """Images (N, 3, H, W) float32 appended batch by batch to an anonymous scratch file in
    ``folder`` and read back by slices (``store[a:b]``), so that only one batch is in memory.

    The file has no name (``tempfile.TemporaryFile``): the system removes it when the store is
    garbage-collected or the process ends, even when it is killed. Plain reads, not a memory map:
    mapped pages would count towards the process's resident memory.
    """

    def __init__(self, folder: Path):
        self._file = tempfile.TemporaryFile(dir=folder)
        self.n, self.shape = 0, None

    def append(self, images: Tensor) -> None:
        arr = np.ascontiguousarray(images.detach().cpu().float().numpy())
        if self.shape is None:
            self.shape = arr.shape[1:]
        elif arr.shape[1:] != self.shape:
            raise ValueError(f"images of shape {arr.shape[1:]} after images of shape {self.shape}")
        self._file.seek(0, os.SEEK_END)
        self._file.write(arr.tobytes())
        self.n += len(arr)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sl: slice) -> Tensor:
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError(f"ImageStore reads contiguous slices, got {sl!r}")
        a, b, _ = sl.indices(self.n)
        per = int(np.prod(self.shape))
        self._file.seek(a * per * 4)
        buf = self._file.read(max(0, b - a) * per * 4)
        arr = np.frombuffer(buf, dtype=np.float32).copy()  # writable, owned by the tensor
        return torch.from_numpy(arr).reshape(-1, *self.shape)  # (b, 3, H, W)


