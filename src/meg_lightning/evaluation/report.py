"""W&B logging of an evaluation sweep: the results table, line plots and example image grids.

Offline by default (``wandb.mode``; ``WANDB_MODE`` in the environment wins), so a run is written
under ``{out_dir}/eval/wandb`` and can be synced later with ``wandb sync``.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path

from meg_lightning.config import MegConfig, to_dict
from meg_lightning.evaluation.figures_common import _sort_key, label
from meg_lightning.evaluation.results import COLUMNS
from meg_lightning.loggers import wandb_mode

LINE_METRICS = {"psnr_db": "PSNR (dB)", "fid": "FID", "latent_nmse": "latent NMSE",
                "semantic_accuracy": "semantic accuracy"}  # (mini only; skipped when all nan)


def line_series(rows: list[dict], kind: str, metric: str) -> tuple[list, list, list]:
    """(xs, ys, keys) per scheme label for ``wandb.plot.line_series`` on channel ``kind``."""

    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        v = r.get(metric)
        if r["channel"] == kind and v is not None and math.isfinite(float(v)) \
                and math.isfinite(float(r["snr_db"])):
            by[label(r)].append((float(r["snr_db"]), float(v)))
    keys = sorted(by, key=_sort_key)
    pts = [sorted(by[k]) for k in keys]
    return [[x for x, _ in p] for p in pts], [[y for _, y in p] for p in pts], keys


def log_to_wandb(cfg: MegConfig, rows: list[dict], eval_dir: Path) -> None:
    """One W&B run ``eval``: table ``eval/results``, line plots ``eval/<metric>_<channel>`` and
    images ``eval/examples_<channel>`` (the first test images of every cell, side by side)."""
    import wandb  # noqa: PLC0415 - heavy (~2 s): imported only when a W&B run is written


    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=wandb_mode(cfg),
                     dir=str(eval_dir), name="eval", job_type="eval", config=to_dict(cfg),
                     reinit="finish_previous")
    try:
        table = wandb.Table(columns=COLUMNS,
                            data=[[r.get(c) for c in COLUMNS] for r in rows])
        logs: dict = {"eval/results": table}
        kinds = sorted({r["channel"] for r in rows})
        for kind in kinds:
            for metric, name in LINE_METRICS.items():
                xs, ys, keys = line_series(rows, kind, metric)
                if keys:
                    logs[f"eval/{metric}_{kind}"] = wandb.plot.line_series(
                        xs=xs, ys=ys, keys=keys, title=f"{name} against SNR ({kind})",
                        xname="SNR (dB)")
            ex = eval_dir / "examples"
            images = [wandb.Image(str(ex / f"{r['cell']}.png"), caption=r["cell"])
                      for r in rows if r["channel"] == kind and (ex / f"{r['cell']}.png").is_file()]
            if images:
                logs[f"eval/examples_{kind}"] = images
        run.log(logs)
    finally:
        run.finish()
