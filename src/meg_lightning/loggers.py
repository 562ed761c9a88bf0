"""Experiment loggers from ``cfg.logger``: wandb (offline by default) | csv | tensorboard | none."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from meg_lightning.config import MegConfig, to_dict


def wandb_mode(cfg: MegConfig) -> str:
    """``WANDB_MODE`` in the environment wins over ``wandb.mode`` in the config."""
    return os.environ.get("WANDB_MODE", cfg.wandb.mode)


def make_lightning_logger(cfg: MegConfig, name: str, save_dir: str | Path) -> Any:
    """A Lightning logger for a run called ``name`` writing under ``save_dir`` (False for none)."""

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if cfg.logger == "none":
        return False
    if cfg.logger == "csv":
        return CSVLogger(save_dir, name=name)
    if cfg.logger == "tensorboard":
        return TensorBoardLogger(save_dir, name=name)

    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(name=name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                       save_dir=str(save_dir), offline=wandb_mode(cfg) == "offline",
                       mode=wandb_mode(cfg), config=to_dict(cfg))
