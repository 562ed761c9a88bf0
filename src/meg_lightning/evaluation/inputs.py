"""What `meg eval` loads and where from: the data (and its test latents), the decoder D, codecs,
the linear code, the judge, channels, and the scratch store of the perfect images I_0. Each can
be injected into :func:`meg_lightning.evaluation.sweep.run_sweep` instead (tests, notebooks)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from meg_lightning.config import MegConfig
from meg_lightning.errors import ConfigError, UserError

def _device(cfg: MegConfig) -> torch.device:
    from meg_lightning.generation import resolve_device

    return resolve_device(cfg.generation.device)


def _default_vae(cfg: MegConfig, device: torch.device):
    from meg_lightning.generation import load_vae

    return load_vae(cfg, device=device)


def _default_datamodule(cfg: MegConfig):
    from meg_lightning.data import build_datamodule

    dm = build_datamodule(cfg)
    dm.prepare_data()  # checks the cache (settings, count, checksums); `meg latents` builds it
    dm.setup("test")
    return dm


def _eval_checkpoint(cfg: MegConfig, fc: float, key: str = "codec_checkpoints") -> Optional[Path]:
    """``eval.<key>[fc]`` (codec_checkpoints | adaptive_checkpoints), or None when it names none
    for that rate."""
    for rate, path in getattr(cfg.eval, key).items():
        try:
            if math.isclose(float(rate), fc):
                return Path(path)
        except ValueError:
            raise ConfigError(f"eval.{key}.{rate}", path,
                              "keys that are compression rates, e.g. "
                              f"'eval.{key}={{\"0.5\": <ckpt>}}'") from None
    return None


def adaptive_checkpoint(cfg: MegConfig, fc: float) -> Path:
    """Which codec evaluates `meg-adaptive` at rate ``fc``: ``eval.adaptive_checkpoints[fc]``;
    else (unless ``eval.pretrained``) `make train-codec-adaptive`'s
    ``{out_dir}/codec-adaptive/fc<fc>/best.ckpt`` (or ``last.ckpt``); else the codec shipped for
    the model (:mod:`meg_lightning.codec.pretrained`, a ``codec.safetensors``)."""
    return _adaptive_source(cfg, fc)[0]


def _adaptive_source(cfg: MegConfig, fc: float) -> tuple[Path, str]:
    """(path, where from: named | out_dir | shipped) of :func:`adaptive_checkpoint`."""
    import dataclasses

    from meg_lightning.codec import pretrained
    from meg_lightning.codec.train import run_dir

    explicit = _eval_checkpoint(cfg, fc, "adaptive_checkpoints")
    if explicit is not None:
        return explicit, "named"
    folder = run_dir(dataclasses.replace(cfg, codec=dataclasses.replace(
        cfg.codec, fc=fc, arch="adaptive")))
    if not cfg.eval.pretrained:
        for name in ("best.ckpt", "last.ckpt"):
            if (folder / name).is_file():
                return folder / name, "out_dir"
    if pretrained.has_pretrained(cfg.model, fc):
        return pretrained.folder(cfg.model, fc) / "codec.safetensors", "shipped"
    shipped = ", ".join(f"{f:g}" for f in pretrained.available(cfg.model)) or "none"
    where = "" if cfg.eval.pretrained else f"{str(folder)!r} holds no checkpoint and "
    raise UserError(f"no adaptive codec for fc={fc:g}: {where}none ships for model={cfg.model} "
                    f"(shipped rates: {shipped}); run `make train-codec-adaptive FC={fc:g}` "
                    f"first or set 'eval.adaptive_checkpoints={{\"{fc:g}\": <.ckpt>}}'")


def _default_adaptive_codec(cfg: MegConfig, fc: float, latent_shape, device):
    """The codec of :func:`adaptive_checkpoint`: a shipped one is taken as it is (it records its
    own data in its card); one in ``out_dir`` must have been trained on this run's latents."""
    from meg_lightning.codec import pretrained
    from meg_lightning.codec.module import load_codec
    from meg_lightning.config import data_id

    path, source = _adaptive_source(cfg, fc)
    if source == "shipped":
        codec = pretrained.load_pretrained(cfg.model, fc, latent_shape)
    else:  # a named checkpoint is taken as it is, like eval.codec_checkpoints
        codec = load_codec(path, latent_shape=latent_shape, fc=fc,
                           data_id=data_id(cfg) if source == "out_dir" else None)
    if not codec.adaptive:
        raise ConfigError(f"eval.adaptive_checkpoints.{fc:g}", str(path),
                          "a codec trained with codec.arch=adaptive (this one is "
                          f"arch={codec.hparams.arch}; evaluate it as scheme meg)")
    return codec.to(device)


def codec_checkpoint(cfg: MegConfig, fc: float) -> Path:
    """Which codec checkpoint evaluates rate ``fc``: ``eval.codec_checkpoints[fc]``, else
    :func:`meg_lightning.codec.train.trained_checkpoint` (``codec.checkpoint`` or the output of
    `meg train-codec codec.fc=<fc>`)."""
    from meg_lightning.codec.train import trained_checkpoint

    explicit = _eval_checkpoint(cfg, fc)
    if explicit is not None:
        return explicit
    try:
        return trained_checkpoint(cfg, fc)
    except UserError as e:
        raise _eval_advice(e, fc) from None


def _eval_advice(e: UserError, fc: float) -> UserError:
    """`meg eval` names a checkpoint per rate in eval.codec_checkpoints (codec.checkpoint only
    counts when codec.fc is that rate): say so instead of train-codec's advice."""
    msg = str(e)
    if not msg.startswith("no trained codec"):
        return e
    return UserError(msg.split("; run ")[0] + f"; run `meg train-codec codec.fc={fc:g}` first "
                     f"or set 'eval.codec_checkpoints={{\"{fc:g}\": <.ckpt>}}'")


def _default_codec(cfg: MegConfig, fc: float, latent_shape, device):
    """The codec of :func:`codec_checkpoint`; one that `meg train-codec` left in ``out_dir``
    must have been trained on this run's latents (codec.train.load_trained_codec)."""
    from meg_lightning.codec.train import load_trained_codec

    try:
        codec = load_trained_codec(cfg, fc, latent_shape=latent_shape,
                                   path=_eval_checkpoint(cfg, fc))
    except UserError as e:
        raise _eval_advice(e, fc) from None
    return codec.to(device)


def _test_latents(dm, n: int) -> tuple[Tensor, Tensor]:
    """The first n test latents z (n, C, h, w) and their cache indices (n,)."""
    ds = dm.dataset("test")
    if len(ds) == 0:
        raise UserError("the test split of the latent cache is empty: expected data.test_fraction "
                        "* data.num_prompts >= 1")
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([it["z"] for it in items]), torch.stack([it["index"] for it in items])


def _check_num_images(cfg: MegConfig, available: int) -> None:
    """``eval.num_images`` asked on the command line and larger than the test split is an error
    (FID over fewer images than asked is another metric); the default is an upper bound, noted."""
    import sys

    from meg_lightning.cli import current_overrides

    n = cfg.eval.num_images
    if available >= n:
        return
    if any(o.split("=", 1)[0] == "eval.num_images" for o in current_overrides()):
        raise ConfigError("eval.num_images", n, f"at most {available}, the size of the test split "
                          "(raise data.num_prompts or data.test_fraction)")
    print(f"meg eval: note: eval.num_images={n} but the test split holds {available} latents: "
          f"every cell uses {available}", file=sys.stderr)


def train_latents(dm) -> Tensor:
    """All training latents (N, C, h, w): what the linear code and the OPTA spectrum are fitted on."""
    ds = dm.dataset("train")
    return torch.stack([ds[i]["z"] for i in range(len(ds))])


def _default_linear(fc: float, z_train: Tensor, device):
    """The optimal linear analog code of rate fc (codec.LinearCode) fitted on training latents."""
    from meg_lightning.codec import LinearCode

    return LinearCode.fit(z_train, fc).to(device)


def latent_spectrum(z_train: Tensor) -> np.ndarray:
    """All |z| eigenvalues of the training latents' sample covariance (descending, zero-padded)."""
    from meg_lightning.codec import LinearCode

    lam = LinearCode.fit(z_train, 1.0).eigvals
    return np.pad(lam, (0, z_train[0].numel() - lam.size))


def _default_judge(cfg: MegConfig, extractor: Any = None
                   ) -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """For model ``mini``: (images, cache indices) -> (b,) bool, whether each image's five
    attributes all match its prompt (the shipped classifier); None for other models.

    When ``extractor`` (the FID feature extractor) is that classifier (mini-FID), the judge is
    built on it and also judges from its features (``judge.from_features(features, index)``,
    ``judge.features_of is extractor``): the sweep then runs the classifier once per batch."""
    if cfg.model != "mini":
        return None
    from meg_lightning.data.prompts import get_prompts
    from meg_lightning.mini.classifier import AttributeClassifier, all_match, load_classifier

    prompts = get_prompts(cfg.data.prompts, cfg.data.num_prompts, cfg.data.prompt_column)
    shared = isinstance(extractor, AttributeClassifier)
    clf = extractor if shared else load_classifier()

    def judge(images: Tensor, index: Tensor) -> Tensor:
        return all_match(images.cpu(), [prompts[int(i)] for i in index], clf)

    def from_features(features: Tensor, index: Tensor) -> Tensor:
        return all_match(None, [prompts[int(i)] for i in index], clf, features=features)

    judge.features_of = clf if shared else None
    judge.from_features = from_features
    return judge


def judge_batch(judge: Callable[[Tensor, Tensor], Tensor], images: Tensor, index: Tensor,
                extractor: Any = None, features: Optional[Tensor] = None) -> Tensor:
    """``judge(images, index)`` as (b,) bool on the CPU, from ``features`` (``extractor``'s of
    these images) when the judge reads that extractor's features (see :func:`_default_judge`)."""
    if features is not None and extractor is not None and \
            getattr(judge, "features_of", None) is extractor:
        return judge.from_features(features, index).cpu()
    return judge(images, index).cpu()


def _default_channel(cfg: MegConfig, kind: str, snr_db: float):
    from meg_lightning.channel import Channel

    return Channel(kind=kind, snr_db=snr_db if math.isfinite(snr_db) else 0.0,
                   num_blocks=cfg.channel.num_blocks, equalizer=cfg.channel.equalizer,
                   normalize=True)


class ImageStore:
    """Images (N, 3, H, W) float32 appended batch by batch to an anonymous scratch file in
    ``folder`` and read back by slices (``store[a:b]``), so that only one batch is in memory.

    The file has no name (``tempfile.TemporaryFile``): the system removes it when the store is
    garbage-collected or the process ends, even when it is killed. Plain reads, not a memory map:
    mapped pages would count towards the process's resident memory.
    """

    def __init__(self, folder: Path):
        import tempfile

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


