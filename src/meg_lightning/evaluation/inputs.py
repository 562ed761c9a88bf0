"""What `meg eval` and `meg eval-multiuser` load and where from: the data (and its test latents),
the decoder D, codecs, the linear code, the diffusers pipeline and the prompts (gathered in the
schemes' :class:`~meg_lightning.schemes.BuildContext` by :func:`scheme_context`), the judge,
channels, and the scratch store of the perfect images I_0. Each can be injected into
:func:`meg_lightning.evaluation.sweep.run_sweep` (or
:func:`meg_lightning.multiuser.sweep.run_multiuser`) instead (tests, notebooks)."""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from meg_lightning.channels import build as build_channel
from meg_lightning.codecs import LinearCode
from meg_lightning.codecs.store import load_learned_codec
from meg_lightning.config import MegConfig
from meg_lightning.data import build_datamodule
from meg_lightning.data.prompts import get_prompts
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.generation import decode_latents, load_pipeline, load_vae, resolve_device
from meg_lightning.mini.classifier import prompt_judge
from meg_lightning.schemes import BuildContext


def _device(cfg: MegConfig) -> torch.device:
    return resolve_device(cfg.generation.device)


def _default_vae(cfg: MegConfig, device: torch.device):
    return load_vae(cfg, device=device)


def image_decoder(cfg: MegConfig, device: torch.device, vae: Any = None
                  ) -> Callable[[Tensor], Tensor]:
    """D: z (b, C, h, w) -> images (b, 3, H, W) in [0, 1], with ``vae`` (default: the model's)."""
    vae = (vae if vae is not None else _default_vae(cfg, device)).eval()

    def decode_image(zz: Tensor) -> Tensor:
        return decode_latents(vae, zz).float()

    return decode_image


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


def warn_few_latents(n: int, numel: int) -> None:
    """One warning line when the linear code is fitted on no more training latents than a latent
    has dimensions: the sample covariance then has rank < |z|, so the code knows only the
    directions those latents span."""
    if n <= numel:
        warnings.warn(f"linear: fitted on {n} training latents, no more than the {numel} "
                      f"dimensions of a latent (|z|): their covariance has rank <= {n - 1} < "
                      f"{numel}, so the code fits these latents, not the test ones (and OPTA "
                      f"stays empty); use more than {numel} training latents (raise "
                      "data.num_prompts)", stacklevel=3)


def memo(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` computed once per argument tuple."""
    cache: dict[tuple, Any] = {}

    def get(*key: Any) -> Any:
        if key not in cache:
            cache[key] = fn(*key)
        return cache[key]

    return get


def injected_codecs(codecs: Optional[dict[Any, Any]]) -> dict[tuple[str, float], Any]:
    """Injected codecs keyed (learned folder, fc); a bare fc is the ``codec`` folder of `meg`."""
    return {(k if isinstance(k, tuple) else ("codec", float(k))): v
            for k, v in (codecs or {}).items()}


def scheme_context(cfg: MegConfig, dm: Any, device: Any,
                   decode_image: Callable[[Tensor], Tensor], *,
                   codecs: Optional[dict[tuple[str, float], Any]] = None,
                   linear_codes: Optional[dict[float, Any]] = None, pipeline: Any = None,
                   prompts: Optional[list[str]] = None
                   ) -> tuple[BuildContext, Callable[[], list[str]]]:
    """The schemes' :class:`~meg_lightning.schemes.BuildContext` over the datamodule ``dm`` and
    D = ``decode_image``, and ``all_prompts()``, the prompt of every cache index. Everything is
    loaded on first use and once: the training latents, the codecs (``codecs``, keyed as
    :func:`injected_codecs`, else :func:`~meg_lightning.codecs.store.load_learned_codec`), the
    linear codes (``linear_codes``: fc -> code, else fitted on the training latents, with
    :func:`warn_few_latents` once), the pipeline the ``X+dm`` receivers run (``pipeline``, else
    :func:`~meg_lightning.generation.load_pipeline`) and the prompts (``prompts``, else
    ``data.prompts``: the prompts the cache was built from)."""
    latent_shape = tuple(dm.latent_shape) if dm is not None else ()
    injected, injected_linear = dict(codecs or {}), dict(linear_codes or {})
    cache: dict[str, Any] = {}

    def z_train() -> Tensor:
        if "z_train" not in cache:
            cache["z_train"] = train_latents(dm)
        return cache["z_train"]

    def all_prompts() -> list[str]:
        if "prompts" not in cache:
            cache["prompts"] = (list(prompts) if prompts is not None else
                                get_prompts(cfg.data.prompts, cfg.data.num_prompts,
                                            cfg.data.prompt_column))
        return cache["prompts"]

    def train_prompts() -> list[str]:
        ds = dm.dataset("train")
        return [all_prompts()[int(ds[i]["index"])] for i in range(len(ds))]

    def linear_code(fc: float) -> Any:
        if fc in injected_linear:
            return injected_linear[fc]
        if "linear_checked" not in cache:
            cache["linear_checked"] = True
            warn_few_latents(len(z_train()), math.prod(latent_shape))
        return _default_linear(fc, z_train(), device)

    def pipe() -> Any:
        if "pipeline" not in cache:
            cache["pipeline"] = (pipeline if pipeline is not None
                                 else load_pipeline(cfg, device=device))
        return cache["pipeline"]

    ctx = BuildContext(
        cfg=cfg, decode_image=decode_image, latent_shape=latent_shape, device=device,
        z_train=z_train, pipeline=pipe, train_prompts=train_prompts,
        codec=memo(lambda learned, fc: injected.get((learned, fc))
                   or load_learned_codec(cfg, learned, fc, latent_shape, device)),
        linear_code=memo(linear_code))
    return ctx, all_prompts


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


