"""Comparing power policies on shared channel draws, and the data of paper Fig. 10.

:func:`evaluate_policies` replays the SAME seeds, fading and noise for every policy (the env's
generator is re-seeded before each rollout), so differences are due to the policies alone.
:mod:`meg_lightning.power.sweep` uses it for the data of Fig. 10.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from meg_lightning.power.env import MEGPowerEnv
from meg_lightning.power.policies import baseline_policies

METRICS = ("latent_mse", "expected_mse", "psnr", "fid")
#: Fig. 10's metrics: each has ``<m>_lo`` / ``<m>_hi`` (95% interval) beside it in the CSV
FIG10_METRICS = ("fid", "psnr", "accuracy", "latent_mse")
FIG10_COLUMNS = ("p_max_mw", "snr_db", "policy", "num_blocks", "channel", "scheme", "fc", "reward",
                 "n_images", *(f"{m}{s}" for m in FIG10_METRICS for s in ("", "_lo", "_hi")),
                 "power_saved_db", "episodes", "held_out_mse", "vs_causal_dp", "vs_causal_dp_lo",
                 "vs_causal_dp_hi")
Z95 = 1.959964  # the standard normal's 97.5% quantile
#: budgets (mW) of Fig. 10 with B = 8 blocks and N0 = 1 mW: average SNR -10 .. +10 dB
FIG10_POWERS = (0.8, 2.5, 8.0, 25.0, 80.0)
#: the block-count table (``ppo.block_counts``)
BLOCK_COLUMNS = ("num_blocks", "channel", "snr_db", "policy", "latent_mse", "latent_mse_lo",
                 "latent_mse_hi", "vs_causal_dp", "n", "train_seconds", "frames")


def standard_policies(env: MEGPowerEnv) -> dict[str, Callable]:
    """Every registered baseline policy for ``env`` (:func:`.policies.baseline_policies`)."""
    return baseline_policies(env)


@torch.no_grad()
def evaluate_policies(env: MEGPowerEnv, policies: dict[str, Callable],
                      transform: Optional[Callable[[MEGPowerEnv], Any]] = None,
                      keep: bool = False, bootstrap: int = 1000) -> dict[str, Any]:
    """Mean terminal metrics of each policy over one batch of ``env`` (N shared episodes).

    ``transform`` wraps the env as the learned policies expect (e.g. the concatenated
    ``observation``); the other policies read the raw keys of the env itself. Learned policies act
    deterministically (the mode of pi). Returns ``{"policies": {name: {metric: value,
    "latent_mse_lo"/"_hi": 95% interval over episodes}}, "gap_closed": (equal - ppo) / (equal -
    causal_dp) in latent MSE or None, "ratio_ci": the bootstrap 95% interval of ppo / causal_dp
    over paired episodes or None, "n": N, ...}``; ``keep`` adds ``"outcomes"``: each policy's
    ``env.outcome`` (z, z_hat, images when decoded, cache indices) for image metrics.
    """

    seed = env.seed
    run_env = transform(env) if transform else env
    res: dict[str, dict[str, float]] = {}
    per: dict[str, torch.Tensor] = {}
    outcomes: dict[str, dict] = {}
    for name, policy in policies.items():
        learned = getattr(type(policy), "learned", False)
        target = run_env if learned else env
        target.set_seed(seed)  # the same seeds, fading and noise for every policy
        policy.eval()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = target.rollout(env.num_blocks, policy, break_when_any_done=True)
        end = td[:, -1]["next"]  # (N,) the last block of every episode
        r = {k: float(end[k].mean()) for k in METRICS}
        mse = end["latent_mse"].squeeze(-1).double()
        _, r["latent_mse_lo"], r["latent_mse_hi"] = mean_ci(mse)
        if not env.image_metrics:
            r["psnr"] = r["fid"] = math.nan
        else:
            r["fid"] = float(end["fid"][0])  # one set-level value shared by the N episodes
        r["budget_used"] = float(end["power"].sum(-1).mean())
        r["min_block_power"] = float(end["power"].amin(-1).mean() * env.num_blocks)
        res[name] = r
        per[name] = mse
        if keep:
            outcomes[name] = dict(env.outcome)
    env.set_seed(seed)
    gap = ratio_ci = None
    if {"ppo", "equal", "causal_dp"} <= res.keys():
        e, d = res["equal"]["latent_mse"], res["causal_dp"]["latent_mse"]
        gap = (e - res["ppo"]["latent_mse"]) / (e - d) if e > d else None
    if {"ppo", "causal_dp"} <= per.keys() and bootstrap > 0:
        ratio_ci = paired_ratio_ci(per["ppo"], per["causal_dp"], bootstrap)
    out = {"policies": res, "gap_closed": gap, "ratio_ci": ratio_ci, "n": env.batch_size[0],
           "snr_db": env.snr_db, "p_max_mw": env.p_max_mw, "num_blocks": env.num_blocks,
           "channel": env.link.kind, "min_power": env.min_power}
    if keep:
        out["outcomes"] = outcomes
    return out


def mean_ci(values: torch.Tensor) -> tuple[float, float, float]:
    """Mean of ``values`` and its normal 95% interval."""
    v = values.double().flatten()
    m = float(v.mean())
    half = Z95 * float(v.std()) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return m, m - half, m + half


def paired_ratio_ci(a: torch.Tensor, b: torch.Tensor, resamples: int = 1000,
                    seed: int = 0) -> list[float]:
    """The 95% bootstrap interval of ``mean(a) / mean(b)`` over paired episodes (a[i], b[i] share
    their draws)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(a), (resamples, len(a)), generator=g)
    ratios = a[idx].mean(1) / b[idx].mean(1).clamp_min(1e-300)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype)).tolist()
    return [lo, hi]
