"""`meg train-ppo`: train PPO (:mod:`.train`), compare it with the baselines on held-out draws,
and, when ``ppo.fig10_powers`` is set, the data of paper Fig. 10 (:func:`fig10_sweep`): FID / PSNR
/ latent MSE against the power budget per policy, as a tidy CSV that
:mod:`meg_lightning.evaluation.figures` plots."""

from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import nn

from meg_lightning.codecs.train import trained_checkpoint
from meg_lightning.config import MegConfig
from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_write_text
from meg_lightning.power import train as ppo_train
from meg_lightning.power.env import make_env, make_source
from meg_lightning.power.evaluate import FIG10_COLUMNS, FIG10_POWERS, evaluate_policies
from meg_lightning.power.policies import POLICIES, baseline_policies


def fig10_sweep(cfg: Any, powers: Sequence[float] = FIG10_POWERS, *,
                policies: Sequence[str] = ("ppo", "equal"), train: bool = True,
                num_images: Optional[int] = None, fid_extractor: Optional[nn.Module] = None,
                out_csv: Optional[str | Path] = None) -> Path:
    """Fig. 10: FID (and PSNR, latent MSE) against the power budget P_max, as a CSV.

    For each ``P_max`` in ``powers`` (mW) the noise power stays ``channel.noise_power_mw`` (so the
    SNR grows with the budget: ``ppo.avg_snr_db`` is ignored here), a PPO agent is trained under
    ``{out_dir}/fig10/p<P_max>/ppo`` (resumed if already there; ``train=False`` only loads it),
    and every policy is evaluated on the same ``num_images`` episodes (default
    ``eval.num_images`` when images are decoded, else ``ppo.eval_episodes``). FID and PSNR need a
    scheme with images (``meg`` / ``feature`` and a model); for ``gaussian`` they are empty.

    Returns the CSV path (default ``{out_dir}/ppo/fig10.csv``, where the figures stage looks),
    columns :data:`FIG10_COLUMNS`.
    """
    if not powers:
        raise ConfigError("powers", list(powers), "a non-empty list of budgets in mW")
    for p in powers:
        if not (isinstance(p, (int, float)) and math.isfinite(p) and p > 0):
            raise ConfigError("powers", list(powers), "budgets > 0 (mW)")
    for name in policies:
        POLICIES[name]  # a one-line ConfigError for an unknown name
    source = make_source(cfg, split="test", images=True)  # FID / PSNR when a model exists
    images = source.images is not None
    n = num_images or ((cfg.eval.num_images or len(source.z)) if images
                       else cfg.ppo.eval_episodes)
    rows: list[dict[str, Any]] = []
    for p_max in powers:
        cfg_p = copy.deepcopy(cfg)
        cfg_p.ppo.p_max_mw, cfg_p.ppo.avg_snr_db = float(p_max), None
        cfg_p.ppo.checkpoint, cfg_p.ppo.fig10_powers = None, None
        if cfg.ppo.scheme == "meg":  # the codec stays the one trained under the main out_dir

            cfg_p.codec.checkpoint = str(trained_checkpoint(cfg))
        cfg_p.out_dir = str(Path(cfg.out_dir) / "fig10" / f"p{p_max:g}")
        env = make_env(cfg_p, source=source, num_envs=n, seed=cfg.seed + 1_000_003,
                       fid_extractor=fid_extractor, image_metrics=images)
        if train and any(POLICIES[k].learned for k in policies):
            ppo_train.main(cfg_p)
        pols = {k: POLICIES[k].build(env, cfg_p) for k in policies
                if POLICIES[k].learned or k in baseline_policies(env)}
        res = evaluate_policies(env, pols, transform=lambda e: ppo_train.wrap_env(e))
        for name, r in res["policies"].items():
            rows.append({"p_max_mw": p_max, "snr_db": env.snr_db, "policy": name,
                         "fid": r["fid"], "psnr": r["psnr"], "latent_mse": r["latent_mse"],
                         "expected_mse": r["expected_mse"], "n_images": n if images else 0,
                         "scheme": cfg.ppo.scheme, "reward": cfg.ppo.reward})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FIG10_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)  # NaN (no images: gaussian seeds) is written as "nan", which float() reads
    path = Path(out_csv) if out_csv else Path(cfg.out_dir) / "ppo" / "fig10.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def main(cfg: MegConfig) -> dict[str, Any]:
    """`meg train-ppo`: train and evaluate (:func:`meg_lightning.power.train.main`), then the
    Fig. 10 sweep when ``ppo.fig10_powers`` is set."""

    results = ppo_train.main(cfg)
    if cfg.ppo.fig10_powers:
        results["fig10_csv"] = str(fig10_sweep(cfg, cfg.ppo.fig10_powers))
    return results
