"""`meg train-codec`: train C_w / C_psi^{-1} on cached latents through the channel (Algorithm 2).

Outputs under ``{out_dir}/codec/fc{fc}/``: ``best.ckpt`` (lowest ``val/loss``, the latent MSE at
the training SNR), ``last.ckpt`` (every epoch; the next run with the same config resumes from it
exactly), ``config.yaml`` (the resolved config) and the logger's files.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from meg_lightning.codec.module import CodecModule, load_codec, read_checkpoint
from meg_lightning.config import MegConfig, data_id, save_resolved
from meg_lightning.errors import UserError
from meg_lightning.loggers import make_lightning_logger

#: Trainer defaults; every key can be overridden with ``trainer.<key>=...``.
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "log_every_n_steps": 10,
    "enable_progress_bar": True,
}
PAPER_EPOCHS = 200  # Table I
SMALL_EPOCHS = 30  # tiny / mini presets: a few seconds per epoch on a CPU


def run_dir(cfg: MegConfig) -> Path:
    """``{out_dir}/codec/fc{fc}``, e.g. ``data/runs/codec/fc0.5``."""
    return Path(cfg.out_dir) / "codec" / f"fc{cfg.codec.fc:g}"


def configured_checkpoint(cfg: MegConfig, fc: float) -> Optional[Path]:
    """``codec.checkpoint`` when it is set and for rate ``fc``, else None."""
    if cfg.codec.checkpoint and math.isclose(cfg.codec.fc, fc):
        return Path(cfg.codec.checkpoint)
    return None


def trained_checkpoint(cfg: MegConfig, fc: Optional[float] = None) -> Path:
    """The codec for rate ``fc`` (default ``codec.fc``): ``codec.checkpoint`` when it is for that
    rate, else `meg train-codec`'s output ``{out_dir}/codec/fc{fc}/best.ckpt`` (or ``last.ckpt``).
    """
    fc = cfg.codec.fc if fc is None else fc
    configured = configured_checkpoint(cfg, fc)
    if configured is not None:
        return configured
    folder = run_dir(dataclasses.replace(cfg, codec=dataclasses.replace(cfg.codec, fc=fc)))
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"no trained codec for fc={fc:g}: {str(folder)!r} holds no checkpoint; run "
                    f"`meg train-codec codec.fc={fc:g}` first or set codec.checkpoint=<.ckpt>")


def load_trained_codec(cfg: MegConfig, fc: Optional[float] = None, *,
                       latent_shape: Optional[tuple[int, ...]] = None,
                       path: Optional[Path] = None) -> CodecModule:
    """The codec for rate ``fc`` (default ``codec.fc``; the checkpoint's rate is checked only when
    ``fc`` is given). A checkpoint named explicitly (``path``, or ``codec.checkpoint``) is taken as
    it is; one that `meg train-codec` left in ``out_dir`` must have been trained on this run's
    latents (:func:`meg_lightning.config.data_id`)."""
    rate = cfg.codec.fc if fc is None else fc
    explicit = path or configured_checkpoint(cfg, rate)
    if explicit is not None:
        return load_codec(explicit, latent_shape=latent_shape, fc=fc)
    return load_codec(trained_checkpoint(cfg, rate), latent_shape=latent_shape, fc=fc,
                      data_id=data_id(cfg))


def trainer_kwargs(cfg: MegConfig) -> dict[str, Any]:
    """TRAINER_DEFAULTS, the preset's epoch count, then ``cfg.trainer`` (which wins)."""
    kw = dict(TRAINER_DEFAULTS)
    kw["max_epochs"] = PAPER_EPOCHS if cfg.preset == "paper" else SMALL_EPOCHS
    kw.update(dict(cfg.trainer))
    return kw


def resume_path(cfg: MegConfig, folder: Path) -> Optional[Path]:
    """``codec.checkpoint`` if set (must exist), else ``folder/last.ckpt`` if present, else None."""
    if cfg.codec.checkpoint:
        p = Path(cfg.codec.checkpoint)
        if not p.is_file():
            raise UserError(f"codec.checkpoint={cfg.codec.checkpoint!r}: "
                            "expected an existing .ckpt")
        return p
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def check_resumable(path: Path, model: CodecModule) -> None:
    """One-line UserError when ``path`` holds a codec of another shape than ``model``, or one
    trained on other latents (``data_id``; checkpoints that predate it pass)."""
    hp = dict(read_checkpoint(path).get("hyper_parameters") or {})
    for key in ("latent_shape", "fc", "arch", "hidden", "width", "blocks", "skip", "data_id"):
        want = model.hparams.get(key)
        have = hp.get(key)
        if key == "data_id" and (have is None or want is None):
            continue
        if key in ("width", "blocks", "skip") and model.hparams.get("arch") != "adaptive":
            continue  # the paper / mlp layouts do not use them
        if (list(have) if key == "latent_shape" and have is not None else have) != want:
            what = (" (the latents it saw: another model, prompts, generation settings or split)"
                    if key == "data_id" else "")
            raise UserError(f"cannot resume from {str(path)!r}: it was trained with {key}={have!r}, "
                            f"this run asks for {key}={want!r}{what} (delete it or choose another "
                            "out_dir / codec.checkpoint)")


def recipe_callbacks(cfg: MegConfig) -> list[L.Callback]:
    """Early stopping on ``val/loss`` when ``codec.early_stop_patience`` is set (with
    ``codec.val_loss=mean`` that is the MSE averaged over the validation SNRs)."""
    if cfg.codec.early_stop_patience is None:
        return []
    from lightning.pytorch.callbacks import EarlyStopping

    return [EarlyStopping(monitor="val/loss", mode="min", patience=cfg.codec.early_stop_patience)]


def main(cfg: MegConfig, datamodule: Optional[L.LightningDataModule] = None) -> Path:
    """Train the codec for ``cfg``; returns the best checkpoint (``last.ckpt`` if none monitored).

    ``datamodule`` defaults to :func:`meg_lightning.data.build_datamodule` (the latent cache);
    tests and notebooks may pass any datamodule with ``.latent_shape`` and batches ``{"z": ...}``.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    folder = run_dir(cfg)

    # Create the data and the model
    if datamodule is None:
        from meg_lightning.data import build_datamodule

        datamodule = build_datamodule(cfg)
    if rank_zero_only.rank == 0 and hasattr(datamodule, "prepare_data"):
        # Checks the cache (`meg latents` builds it): the model's size depends on the latent
        # shape. DDP workers start inside fit(), after this has finished.
        datamodule.prepare_data()
    latent_shape = tuple(datamodule.latent_shape)
    model = CodecModule.from_config(cfg, latent_shape)

    # Create the callbacks, logger and trainer
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/loss", mode="min",
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False,
                                 enable_version_counter=False)
    logger = make_lightning_logger(cfg, name=f"codec-fc{cfg.codec.fc:g}", save_dir=folder)
    kw = trainer_kwargs(cfg)
    kw.setdefault("default_root_dir", str(folder))
    callbacks = list(kw.pop("callbacks", None) or []) + [checkpoint] + recipe_callbacks(cfg)
    trainer = L.Trainer(logger=logger, callbacks=callbacks, **kw)
    rank_zero_only(save_resolved)(cfg, folder)

    # Train (resuming exactly from last.ckpt when a previous run left one)
    ckpt_path = resume_path(cfg, folder)
    if ckpt_path is not None:
        check_resumable(ckpt_path, model)
    with warnings.catch_warnings():
        # tiny latent sets have fewer batches than log_every_n_steps; that is expected here
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # the run folder also holds config.yaml and the logs, and last.ckpt when resuming
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    rank_zero_info(f"codec checkpoint: {best} (last: {checkpoint.last_model_path})")
    return best
