"""`meg train-codec`: train C_w / C_psi^{-1} on cached latents through the channel (Algorithm 2).

Outputs under ``{out_dir}/codec/fc{fc}/``: ``best.ckpt`` (lowest ``val/loss``, the latent MSE at
the training SNR), ``last.ckpt`` (every epoch; the next run with the same config resumes from it
exactly: the RNG states travel in the checkpoint, see codec.module), ``config.yaml`` (the resolved
config) and the logger's files. A rerun of a finished run trains nothing.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_only

from meg_lightning.checkpoint_io import FileCheckpointIO
from meg_lightning.codecs.base import ARCHS
from meg_lightning.codecs.module import CodecModule, load_codec, read_checkpoint, upgrade_hparams
from meg_lightning.config import MegConfig, data_id, save_resolved
from meg_lightning.data import build_datamodule
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.loggers import make_lightning_logger
from meg_lightning.trainer import check_trainer, progress_bar, quiet_lightning


def run_dir(cfg: MegConfig) -> Path:
    """``{out_dir}/codec/fc{fc}`` (e.g. ``data/runs/codec/fc0.5``: the paper's recipe), or
    ``{out_dir}/codec-adaptive/fc{fc}`` for an SNR-adaptive architecture, so the two recipes can
    be trained side by side in one out_dir (the schemes that evaluate them name the folder:
    their ``learned``)."""
    family = "codec-adaptive" if ARCHS[cfg.codec.arch].adaptive else "codec"
    return Path(cfg.out_dir) / family / f"fc{cfg.codec.fc:g}"


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


def val_loss_meaning(cfg: MegConfig) -> str:
    """What ``val/loss`` (the checkpoint monitor) measures for ``codec.val_loss``, in words."""
    snrs = ", ".join(f"{s:g}" for s in cfg.codec.val_snrs_db)
    return {"train_snr": f"latent MSE at the training SNR {cfg.channel.snr_db:g} dB",
            "mean": f"latent MSE averaged over {snrs} dB",
            "linear_ratio": f"latent MSE / the linear code's, averaged over {snrs} dB"
            }[cfg.codec.val_loss]


def _logger_files(logger: Any) -> str:
    """Where the run's logger writes (``; W&B offline run <folder> ...``, the CSV or TensorBoard
    folder), or nothing for ``logger=none``."""
    if not logger:
        return ""
    if type(logger).__name__ == "WandbLogger":
        try:
            settings = logger.experiment.settings
            folder = Path(settings.sync_dir) if getattr(settings, "_offline", False) else None
        except Exception:  # noqa: BLE001 - the summary never fails a finished run
            folder = None
        if folder is None:
            url = getattr(getattr(logger, "experiment", None), "url", None)
            return f"; W&B run {url}" if url else ""
        return f"; W&B offline run {folder} (`wandb sync` uploads it)"
    log_dir = getattr(logger, "log_dir", None)
    return f"; {type(logger).__name__.replace('Logger', '')} logs {log_dir}" if log_dir else ""


def summary_line(cfg: MegConfig, score: Optional[float], epochs: int, best: Path,
                 logger: Any = None) -> str:
    """The one line `meg train-codec` ends with: the best ``val/loss``, what it measures and its
    direction, the epochs trained, the checkpoint and the logger's files."""
    loss = "val/loss n/a (no validation ran)" if score is None else f"val/loss {score:.4g}"
    return (f"train-codec: {loss} (lower is better: {val_loss_meaning(cfg)}) after {epochs} "
            f"epoch{'s' if epochs != 1 else ''}; checkpoint {best} (last.ckpt beside it)"
            f"{_logger_files(logger)}")


def _best_score(path: Path) -> Optional[float]:
    """The best ``val/loss`` that the ModelCheckpoint state in checkpoint ``path`` recorded."""
    for key, state in (read_checkpoint(path).get("callbacks") or {}).items():
        if "ModelCheckpoint" in str(key) and "'val/loss'" in str(key):
            score = state.get("best_model_score") if isinstance(state, dict) else None
            if score is not None:
                return float(score)
    return None


def trainer_kwargs(cfg: MegConfig) -> dict[str, Any]:
    """The Trainer's keywords: a progress bar, then ``cfg.trainer`` (which wins)."""
    return {"enable_progress_bar": True, **dict(cfg.trainer)}


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
    """One-line UserError when ``path`` holds a codec of another shape than ``model`` (latent
    shape, rate, architecture and its settings), or one trained on other latents (``data_id``;
    checkpoints that predate it pass)."""
    hp = upgrade_hparams(dict(read_checkpoint(path).get("hyper_parameters") or {}))
    want = model.hparams
    arch = want["codec"]["arch"]
    pairs = [("latent_shape", list(hp.get("latent_shape") or []), list(want["latent_shape"])),
             ("codec.fc", hp["codec"].get("fc"), want["codec"]["fc"]),
             ("codec.arch", hp["codec"].get("arch"), arch)]
    if hp["codec"].get("arch") == arch:
        mine, theirs = want["codec"][arch], hp["codec"].get(arch, {})
        pairs += [(f"codec.{arch}.{k}", theirs.get(k), v) for k, v in mine.items()]
    if hp.get("data_id") is not None and want.get("data_id") is not None:
        pairs.append(("data_id", hp["data_id"], want["data_id"]))
    for key, have, asked in pairs:
        if have != asked:
            what = (" (the latents it saw: another model, prompts, generation settings or split)"
                    if key == "data_id" else "")
            raise UserError(f"cannot resume from {str(path)!r}: it was trained with {key}={have!r}, "
                            f"this run asks for {key}={asked!r}{what} (delete it or choose another "
                            "out_dir / codec.checkpoint)")


def recipe_callbacks(cfg: MegConfig) -> list[L.Callback]:
    """Early stopping on ``val/loss`` when ``codec.early_stop_patience`` is set (with
    ``codec.val_loss=mean`` that is the MSE averaged over the validation SNRs)."""
    if cfg.codec.early_stop_patience is None:
        return []
    return [EarlyStopping(monitor="val/loss", mode="min", patience=cfg.codec.early_stop_patience)]


def epochs_done(path: Path) -> int:
    """Training epochs finished in a checkpoint that ``last.ckpt`` wrote at the end of an epoch
    (Lightning records the index of the epoch it was saved in, before counting it complete)."""
    return int(read_checkpoint(path).get("epoch", -1)) + 1


def main(cfg: MegConfig, datamodule: Optional[L.LightningDataModule] = None, *,
         callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train the codec for ``cfg``; returns the best checkpoint (``last.ckpt`` if none monitored).

    ``datamodule`` defaults to :func:`meg_lightning.data.build_datamodule` (the latent cache);
    tests and notebooks may pass any datamodule with ``.latent_shape`` and batches ``{"z": ...}``,
    and extra Lightning ``callbacks``. Everything is checked (trainer settings, cache, a checkpoint to resume) before the first file
    is written; a finished run is not retrained.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    folder = run_dir(cfg)
    kw = trainer_kwargs(cfg)
    check_trainer(dict(cfg.trainer))

    # Create the data and the model
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    if rank_zero_only.rank == 0 and hasattr(datamodule, "prepare_data"):
        # Checks the cache (`meg latents` builds it): the model's size depends on the latent
        # shape. DDP workers start inside fit(), after this has finished.
        datamodule.prepare_data()
    latent_shape = tuple(datamodule.latent_shape)
    model = CodecModule.from_config(cfg, latent_shape)
    model.channel.check_length(model.k)  # the blocks split the seed (else fit() fails later)

    # Resume exactly from last.ckpt when a previous run left one (checked before any write)
    ckpt_path = resume_path(cfg, folder)
    if ckpt_path is not None:
        check_resumable(ckpt_path, model)
        done = epochs_done(ckpt_path)
        if done > kw["max_epochs"]:
            raise ConfigError("trainer.max_epochs", kw["max_epochs"],
                              f"at least {done}, the epochs {str(ckpt_path)!r} has already "
                              "trained (or another out_dir)")
        if done == kw["max_epochs"] and ckpt_path == folder / "last.ckpt":
            best = folder / "best.ckpt"
            best = best if best.is_file() else ckpt_path
            print(f"meg train-codec: {str(ckpt_path)!r} has finished all {done} epochs "
                  "(nothing to do; raise trainer.max_epochs to train on)")
            print(summary_line(cfg, _best_score(ckpt_path), done, best))
            return best

    # Create the callbacks, logger and trainer
    best_ckpt = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/loss", mode="min",
                                save_top_k=1, auto_insert_metric_name=False,
                                enable_version_counter=False)
    # last.ckpt at the end of every epoch (save_last on the monitored callback above writes it
    # only when val/loss improves); listed after best so that it holds best's updated state
    last_ckpt = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                                every_n_epochs=1, auto_insert_metric_name=False,
                                enable_version_counter=False)
    logger = make_lightning_logger(cfg, name=f"codec-fc{cfg.codec.fc:g}", save_dir=folder)
    kw.setdefault("default_root_dir", str(folder))
    # Lightning's writer buffers the whole checkpoint in memory (6.8 GB for the paper codec)
    kw.setdefault("plugins", [FileCheckpointIO()])
    callbacks = [*callbacks, best_ckpt, last_ckpt, *recipe_callbacks(cfg)]
    if kw.get("enable_progress_bar") and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(progress_bar())  # epochs counted from 1: "Epoch 20/20" for the last
    with quiet_lightning():  # the banners ("GPU available: ...") say nothing new here
        trainer = L.Trainer(logger=logger, callbacks=callbacks, **kw)
    rank_zero_only(save_resolved)(cfg, folder)

    # Train
    sigint = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings():
        # tiny latent sets have fewer batches than log_every_n_steps; that is expected here
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # the run folder also holds config.yaml and the logs, and last.ckpt when resuming
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        # Lightning 2.6 builds torch's deprecated LeafSpec on every fit (torch >= 2.10 warns)
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is "
                                "deprecated", category=FutureWarning)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except SystemExit:
            # Lightning turns Ctrl-C / SIGTERM into sys.exit(1); the CLI reports an interrupt
            # the same way for every command (exit 130 and the resume line)
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # Lightning's, after Ctrl-C
                signal.signal(signal.SIGINT, sigint)
    best = Path(best_ckpt.best_model_path or last_ckpt.best_model_path)
    score = best_ckpt.best_model_score
    rank_zero_only(print)(summary_line(cfg, None if score is None else float(score),
                                       trainer.current_epoch, best, logger))
    return best
