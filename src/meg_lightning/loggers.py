"""Experiment loggers from ``cfg.logger``: wandb (offline by default) | csv | tensorboard | none.

Also a quiet W&B run of one's own (:func:`wandb_run`: offline by default, every file under the
given folder) and readers of the CSV loggers' files (Lightning's ``metrics.csv``, TorchRL's
``scalars/*.csv``), so that curves logged to CSV can be logged to W&B afterwards.
"""

from __future__ import annotations

import csv
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from meg_lightning.config import MegConfig, to_dict

#: a curve: (x, y) points in x order
Curve = list[tuple[float, float]]


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
    logger = WandbLogger(name=name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                         save_dir=str(save_dir), offline=wandb_mode(cfg) == "offline",
                         mode=wandb_mode(cfg), config=to_dict(cfg))
    # Lightning passes anonymous=None, which wandb >= 0.19 answers with a deprecation warning
    # on every run ("The anonymous setting has no effect ..."); leaving it out changes nothing
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


@contextmanager
def wandb_run(cfg: MegConfig, folder: str | Path, name: str, job_type: str) -> Iterator[Any]:
    """A W&B run ``name`` in mode :func:`wandb_mode` (offline by default), finished on exit.

    Everything it writes stays under ``folder``: the run in ``{folder}/wandb/offline-run-*``,
    and the staged copies of its tables (which ``wandb sync`` uploads) in ``{folder}/wandb/data``
    rather than in ``~/.local/share/wandb`` (unless ``WANDB_DATA_DIR`` is set). Quiet: no banner,
    no console capture, no system metrics, no git or package inventory."""
    import wandb  # noqa: PLC0415 - heavy (~2 s): imported only when a W&B run is written

    folder = Path(folder)
    (folder / "wandb").mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("WANDB_SILENT", "WANDB_DATA_DIR")}
    os.environ["WANDB_SILENT"] = "true"
    os.environ.setdefault("WANDB_DATA_DIR", str((folder / "wandb" / "data").resolve()))
    try:
        run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity,
                         mode=wandb_mode(cfg), dir=str(folder), name=name, job_type=job_type,
                         config=to_dict(cfg), reinit="finish_previous",
                         settings=wandb.Settings(silent=True, console="off", disable_git=True,
                                                 save_code=False, x_save_requirements=False,
                                                 x_disable_stats=True,
                                                 x_disable_machine_info=True))
        ok = False
        try:
            yield run
            ok = True
        finally:
            run.finish(exit_code=0 if ok else 1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def offline_run_dir(run: Any) -> Optional[Path]:
    """The folder of an offline run (what ``wandb sync`` takes), None for an online or
    disabled one."""
    settings = getattr(run, "settings", None)
    if settings is None or not getattr(settings, "_offline", False) \
            or getattr(settings, "mode", "") == "disabled":
        return None
    return Path(settings.sync_dir)


def _number(text: str) -> Optional[float]:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def lightning_csv_curves(folder: str | Path) -> dict[str, tuple[str, Curve]]:
    """The curves of a Lightning CSV logger's run ``folder`` (its ``version_*/metrics.csv``,
    a resumed run's versions in order): metric -> (x name, points). A metric logged at most once
    per epoch (``val/*``) is against the ``epoch``, any other against the global ``step``."""
    rows: list[dict[str, str]] = []
    versions = sorted(Path(folder).glob("version_*/metrics.csv"),
                      key=lambda p: (len(p.parent.name), p.parent.name))
    for path in versions:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows += list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # a half-written or foreign file: its curve is left out
    points: dict[str, list[tuple[Optional[float], Optional[float], float]]] = {}
    for r in rows:
        for k, v in r.items():
            y = _number(v) if k not in (None, "epoch", "step") else None
            if y is not None:
                points.setdefault(k, []).append((_number(r.get("epoch", "")),
                                                 _number(r.get("step", "")), y))
    out: dict[str, tuple[str, Curve]] = {}
    for k, pts in points.items():
        epochs = [e for e, _, _ in pts]
        by_epoch = None not in epochs and len(set(epochs)) == len(epochs)
        xy = {(e if by_epoch else s): y for e, s, y in pts if (e if by_epoch else s) is not None}
        out[k] = ("epoch" if by_epoch else "step", sorted(xy.items()))
    return out


def torchrl_csv_curves(folder: str | Path) -> dict[str, Curve]:
    """The scalars of a TorchRL CSV logger's experiment ``folder`` (``scalars/<name>.csv``,
    lines ``step,value``): name -> points (a step logged twice, by a resumed run, keeps its
    last value)."""
    root = Path(folder) / "scalars"
    out: dict[str, Curve] = {}
    for path in sorted(root.rglob("*.csv")):
        xy: dict[float, float] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            parts = line.split(",")
            x, y = (_number(parts[0]), _number(parts[1])) if len(parts) == 2 else (None, None)
            if x is not None and y is not None:
                xy[x] = y
        if xy:
            out[path.relative_to(root).with_suffix("").as_posix()] = sorted(xy.items())
    return out
