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
FIG10_COLUMNS = ("p_max_mw", "snr_db", "policy", "fid", "psnr", "latent_mse", "expected_mse",
                 "n_images", "scheme", "reward")
FIG10_POWERS = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0)


def standard_policies(env: MEGPowerEnv) -> dict[str, Callable]:
    """Every registered baseline policy for ``env`` (:func:`.policies.baseline_policies`)."""
    return baseline_policies(env)


@torch.no_grad()
def evaluate_policies(env: MEGPowerEnv, policies: dict[str, Callable],
                      transform: Optional[Callable[[MEGPowerEnv], Any]] = None) -> dict[str, Any]:
    """Mean terminal metrics of each policy over one batch of ``env`` (N shared episodes).

    ``transform`` wraps the env as the learned policies expect (e.g. the concatenated
    ``observation``); the baseline policies read the raw keys and ignore it. Learned policies act
    deterministically (the mode of pi). Returns ``{"policies": {name: {metric: value}},
    "gap_closed": (equal - ppo) / (equal - causal_dp) on expected_mse or None, "n": N, ...}``.
    """

    seed = env.seed
    run_env = transform(env) if transform else env
    res: dict[str, dict[str, float]] = {}
    for name, policy in policies.items():
        run_env.set_seed(seed)  # the same seeds, fading and noise for every policy
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
