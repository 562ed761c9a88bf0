"""Comparing power policies on shared channel draws, and the data of paper Fig. 10.

:func:`evaluate_policies` replays the SAME seeds, fading and noise for every policy (the env's
generator is re-seeded before each rollout), so differences are due to the policies alone.
:func:`fig10_sweep` writes FID / PSNR / latent MSE against the power budget for PPO and equal power
as a tidy CSV that :mod:`meg_lightning.evaluation.figures` plots.
"""

from __future__ import annotations

import copy
import functools
import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_write_text
from meg_lightning.power.baselines import CausalDP, DPPolicy, EqualPolicy, OraclePolicy
from meg_lightning.power.env import MEGPowerEnv, make_env, make_source

METRICS = ("latent_mse", "expected_mse", "psnr", "fid")
FIG10_COLUMNS = ("p_max_mw", "snr_db", "policy", "fid", "psnr", "latent_mse", "expected_mse",
                 "n_images", "scheme", "reward")
FIG10_POWERS = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0)


@functools.lru_cache(maxsize=16)
def causal_dp(num_blocks: int, snr_db: float) -> CausalDP:
    """The DP tables depend only on (B, SNR): build each once per process (~2 s)."""
    return CausalDP(num_blocks, snr_db)


def standard_policies(env: MEGPowerEnv) -> dict[str, Callable]:
    """Equal power, plus the causal DP and the oracle when the receiver is MMSE (their model)."""
    out: dict[str, Callable] = {"equal": EqualPolicy(env.num_blocks)}
    if env.equalizer == "mmse":
        out["causal_dp"] = DPPolicy(causal_dp(env.num_blocks, env.snr_db))
        out["oracle"] = OraclePolicy(env.num_blocks, env.snr_db)
    return out


@torch.no_grad()
def evaluate_policies(env: MEGPowerEnv, policies: dict[str, Callable],
                      transform: Optional[Callable[[MEGPowerEnv], Any]] = None) -> dict[str, Any]:
    """Mean terminal metrics of each policy over one batch of ``env`` (N shared episodes).

    ``transform`` wraps the env as the learned policies expect (e.g. the concatenated
    ``observation``); the baseline policies read the raw keys and ignore it. Learned policies act
    deterministically (the mode of pi). Returns ``{"policies": {name: {metric: value}},
    "gap_closed": (equal - ppo) / (equal - causal_dp) on expected_mse or None, "n": N, ...}``.
    """
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    seed = env.seed
    run_env = transform(env) if transform else env
    res: dict[str, dict[str, float]] = {}
    for name, policy in policies.items():
        run_env.set_seed(seed)  # the same seeds, fading and noise for every policy
        if isinstance(policy, nn.Module):
            policy.eval()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = run_env.rollout(env.num_blocks, policy, break_when_any_done=True)
        end = td[:, -1]["next"]  # (N,) the last block of every episode
        r = {k: float(end[k].mean()) for k in METRICS}
        if not env.image_metrics:
            r["psnr"] = r["fid"] = math.nan
        else:
            r["fid"] = float(end["fid"][0])  # one set-level value shared by the N episodes
        r["budget_used"] = float(end["power"].sum(-1).mean())
        res[name] = r
    env.set_seed(seed)
    gap = None
    if {"ppo", "equal", "causal_dp"} <= res.keys():
        e, d = res["equal"]["expected_mse"], res["causal_dp"]["expected_mse"]
        gap = (e - res["ppo"]["expected_mse"]) / (e - d) if e > d else None
    return {"policies": res, "gap_closed": gap, "n": env.batch_size[0], "snr_db": env.snr_db,
            "p_max_mw": env.p_max_mw}


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
    from meg_lightning.power import train as ppo_train

    if not powers:
        raise ConfigError("powers", list(powers), "a non-empty list of budgets in mW")
    for p in powers:
        if not (isinstance(p, (int, float)) and math.isfinite(p) and p > 0):
            raise ConfigError("powers", list(powers), "budgets > 0 (mW)")
    unknown = set(policies) - {"ppo", "equal", "causal_dp", "oracle"}
    if unknown:
        raise ConfigError("policies", list(policies), "names from ppo, equal, causal_dp, oracle")
    source = make_source(cfg, split="test", images=True)  # FID / PSNR when a model exists
    images = source.images is not None
    n = num_images or (cfg.eval.num_images if images else cfg.ppo.eval_episodes)
    rows: list[dict[str, Any]] = []
    for p_max in powers:
        cfg_p = copy.deepcopy(cfg)
        cfg_p.ppo.p_max_mw, cfg_p.ppo.avg_snr_db = float(p_max), None
        cfg_p.ppo.checkpoint, cfg_p.ppo.fig10_powers = None, None
        if cfg.ppo.scheme == "meg":  # the codec stays the one trained under the main out_dir
            from meg_lightning.codec.train import trained_checkpoint

            cfg_p.codec.checkpoint = str(trained_checkpoint(cfg))
        cfg_p.out_dir = str(Path(cfg.out_dir) / "fig10" / f"p{p_max:g}")
        env = make_env(cfg_p, source=source, num_envs=n, seed=cfg.seed + 1_000_003,
                       fid_extractor=fid_extractor, image_metrics=images)
        pols: dict[str, Callable] = {}
        if "ppo" in policies:
            if train:
                ppo_train.main(cfg_p)
            pols["ppo"] = ppo_train.load_policy(cfg_p, env=env)
        std = standard_policies(env)
        pols.update({k: std[k] for k in policies if k != "ppo" and k in std})
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
