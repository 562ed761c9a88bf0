"""`meg train-ppo`: train PPO (:mod:`.train`) and compare it with the baselines on held-out draws;
when ``ppo.fig10_powers`` is set, the data of paper Fig. 10 (:func:`fig10_sweep`): FID, PSNR,
semantic accuracy and latent MSE against the power budget per policy, with intervals, as a tidy
CSV that :mod:`meg_lightning.evaluation.figures` plots; when ``ppo.block_counts`` is set, the same
comparison at other block counts (:func:`block_table`).

One policy serves every budget when it was trained over their average SNRs
(``ppo.train_snr_db``); a budget outside that range gets a policy of its own, trained under
``{out_dir}/fig10/p<P_max>``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from meg_lightning.channels import theory
from meg_lightning.codecs.store import LEARNED, codec_source
from meg_lightning.config import MegConfig
from meg_lightning.data.prompts import get_prompts
from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_write_text
from meg_lightning.metrics import extract_features, feature_name, fid_with_ci, psnr_per_image
from meg_lightning.mini.classifier import prompt_judge
from meg_lightning.power import train as ppo_train
from meg_lightning.power.env import SCHEMES, make_env, make_source
from meg_lightning.power.evaluate import (
    BLOCK_COLUMNS,
    FIG10_COLUMNS,
    FIG10_POWERS,
    evaluate_policies,
    mean_ci,
)
from meg_lightning.power.policies import POLICIES, baseline_policies

#: the policies of Fig. 10 and of the block-count table
POLICY_NAMES = ("equal", "causal_dp", "oracle", "ppo")


def image_metrics(outcome: dict[str, torch.Tensor], extractor: nn.Module,
                  judge: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                  bootstrap: int, seed: int) -> dict[str, float]:
    """FID (bootstrap interval), PSNR and semantic accuracy (normal intervals) of one policy's UE
    images against the perfect ones, and its latent MSE, from an env's ``outcome``."""
    out: dict[str, float] = {}
    lm = (outcome["z_hat"] - outcome["z"]).flatten(1).square().mean(1)
    out["latent_mse"], out["latent_mse_lo"], out["latent_mse_hi"] = mean_ci(lm)
    nan = float("nan")
    for m in ("fid", "psnr", "accuracy"):
        out[m] = out[f"{m}_lo"] = out[f"{m}_hi"] = nan
    images = outcome.get("images")
    if images is None:
        return out
    i_0 = outcome["images_0"]
    out["psnr"], out["psnr_lo"], out["psnr_hi"] = mean_ci(psnr_per_image(images, i_0)[0])
    feats_0, feats = extract_features(extractor, i_0), extract_features(extractor, images)
    if len(images) >= 2:
        fid = fid_with_ci(feats_0, feats, bootstrap=bootstrap, seed=seed,
                          features=feature_name(extractor))
        out["fid"], out["fid_lo"], out["fid_hi"] = fid.fid, fid.ci_low, fid.ci_high
    if judge is not None and "index" in outcome:
        hit = judge(images, outcome["index"]).float()
        m, lo, hi = mean_ci(hit)
        out["accuracy"], out["accuracy_lo"], out["accuracy_hi"] = m, max(lo, 0.0), min(hi, 1.0)
    return out


def power_saved(rows: list[dict[str, Any]], metric: str) -> None:
    """Fill ``power_saved_db`` of every non-equal row: how many dB less budget it needs than equal
    power for the same ``metric`` (lower is better, > 0), equal's curve interpolated between its
    budgets as log(metric) against dB (distortion and FID fall about exponentially in dB);
    nan where equal's curve does not reach the value."""
    equal = sorted((float(r["p_max_mw"]), math.log(float(r[metric]))) for r in rows
                   if r["policy"] == "equal" and math.isfinite(float(r[metric]))
                   and float(r[metric]) > 0)
    for r in rows:
        r["power_saved_db"] = float("nan")
        if r["policy"] == "equal" or not (math.isfinite(float(r[metric]))
                                          and float(r[metric]) > 0):
            continue
        v = math.log(float(r[metric]))
        for (p0, v0), (p1, v1) in zip(equal, equal[1:]):
            if min(v0, v1) <= v <= max(v0, v1) and v0 != v1:
                db0, db1 = 10 * math.log10(p0), 10 * math.log10(p1)
                need = db0 + (v - v0) * (db1 - db0) / (v1 - v0)  # equal's budget for v (dB)
                r["power_saved_db"] = need - 10 * math.log10(float(r["p_max_mw"]))
                break


def _pinned_codec(cfg: MegConfig, cfg_p: MegConfig) -> None:
    """Keep the codec of the main run when ``cfg_p`` trains under another out_dir."""
    learned = SCHEMES.get(cfg.ppo.scheme)
    if learned is None:
        return
    path, origin = codec_source(cfg, learned, float(cfg.codec.fc))
    if origin != "shipped":
        key = LEARNED[learned][0]
        setattr(cfg_p.eval, key, {**getattr(cfg.eval, key), f"{float(cfg.codec.fc):g}": str(path)})


def _budget_config(cfg: MegConfig, p_max: float, out: Path) -> MegConfig:
    """The run of one budget: its own fixed SNR, out_dir ``out``, the main run's codec."""
    cfg_p = copy.deepcopy(cfg)
    cfg_p.ppo.p_max_mw, cfg_p.ppo.avg_snr_db, cfg_p.ppo.train_snr_db = float(p_max), None, None
    cfg_p.ppo.checkpoint, cfg_p.ppo.fig10_powers, cfg_p.ppo.block_counts = None, None, None
    cfg_p.out_dir = str(out)
    _pinned_codec(cfg, cfg_p)
    return cfg_p


def covers(cfg: MegConfig, snr_db: float) -> bool:
    """Whether the policy of ``cfg`` was trained at (or over a range holding) ``snr_db``."""
    r = cfg.ppo.train_snr_db
    return r is not None and r[0] - 1e-9 <= snr_db <= r[1] + 1e-9


def budget_snrs(cfg: MegConfig, powers: Sequence[float], num_blocks: Optional[int] = None
                ) -> list[float]:
    """The average SNR (dB) of each budget: ``10 log10(P_max / (B N0))``."""
    B = num_blocks or cfg.ppo.num_blocks
    return [float(theory.avg_snr_db(p, B, cfg.channel.noise_power_mw)) for p in powers]


def fig10_sweep(cfg: Any, powers: Sequence[float] = FIG10_POWERS, *,
                policies: Sequence[str] = POLICY_NAMES, train: bool = True,
                num_images: Optional[int] = None, fid_extractor: Optional[nn.Module] = None,
                judge: Optional[Callable] = None, out_csv: Optional[str | Path] = None,
                latent_passes: bool = True, main: Optional[dict] = None) -> Path:
    """Fig. 10: FID, PSNR, semantic accuracy and latent MSE against the power budget P_max.

    For each ``P_max`` in ``powers`` (mW) the noise power stays ``channel.noise_power_mw`` (so the
    SNR grows with the budget: ``ppo.avg_snr_db`` is ignored here). The PPO policy is the main
    run's when ``ppo.train_snr_db`` holds the budget's SNR, else one trained for that budget under
    ``{out_dir}/fig10/p<P_max>/ppo`` (resumed if already there; ``train=False`` only loads it).
    Every policy is evaluated on the same ``num_images`` test latents, each once, with the same
    fading and noise (default ``eval.num_images``, else the whole test split, when images are
    decoded; else ``ppo.eval_episodes`` synthetic seeds). FID, PSNR and semantic accuracy need a
    latent scheme and a model (accuracy: model ``mini``); for ``gaussian`` they are empty.

    With ``latent_passes`` every budget also compares the policies on ``ppo.eval_episodes``
    held-out draws (``held_out_mse``, ``vs_causal_dp`` with PPO's paired bootstrap interval);
    ``main``, the main run's held-out results, serves the budget and SNR it was evaluated at.

    Returns the CSV path (default ``{out_dir}/ppo/fig10.csv``, where the figures stage looks),
    columns :data:`FIG10_COLUMNS`, with ``power_saved_db`` filled for every policy but equal.
    """
    if not powers:
        raise ConfigError("ppo.fig10_powers", list(powers), "a non-empty list of budgets in mW")
    for p in powers:
        if not (isinstance(p, (int, float)) and math.isfinite(p) and p > 0):
            raise ConfigError("ppo.fig10_powers", list(powers), "budgets > 0 (mW)")
    for name in policies:
        POLICIES[name]  # a one-line ConfigError for an unknown name
    source = make_source(cfg, split="test", images=True)  # FID / PSNR when a model exists
    images = source.images is not None
    if images:
        source = source.with_split("test", ordered=True)  # each test latent once
    n = num_images or ((cfg.eval.num_images or len(source.z)) if images
                       else cfg.ppo.eval_episodes)
    if images and judge is None and cfg.model == "mini":
        judge = prompt_judge(get_prompts(cfg.data.prompts, cfg.data.num_prompts,
                                         cfg.data.prompt_column), fid_extractor)
    rows: list[dict[str, Any]] = []
    for p_max, snr in zip(powers, budget_snrs(cfg, powers)):
        cfg_p = cfg if covers(cfg, snr) else _budget_config(
            cfg, p_max, Path(cfg.out_dir) / "fig10" / f"p{p_max:g}")
        env = make_env(cfg_p, source=source, num_envs=n, seed=cfg.seed + 1_000_003,
                       fid_extractor=fid_extractor, image_metrics=images, p_max_mw=p_max,
                       snr_db=snr)
        if train and cfg_p is not cfg and "ppo" in policies:
            ppo_train.main(cfg_p)
        pols = {k: POLICIES[k].build(env, cfg_p) for k in policies
                if POLICIES[k].learned or k in baseline_policies(env)}
        res = evaluate_policies(env, pols, transform=ppo_train.wrap_env, keep=True,
                                bootstrap=0)
        held = None  # latent MSE on ppo.eval_episodes held-out draws: PPO against the causal DP
        if "ppo" in pols and latent_passes:
            same = (main is not None and cfg_p is cfg and main.get("n") == cfg.ppo.eval_episodes
                    and math.isclose(main["snr_db"], snr) and math.isclose(main["p_max_mw"], p_max))
            held = main if same else ppo_train.held_out(cfg_p, source, pols["ppo"].actor,
                                                        p_max_mw=p_max, snr_db=snr)
        for name, outcome in res["outcomes"].items():
            row = {"p_max_mw": p_max, "snr_db": snr, "policy": name,
                   "num_blocks": env.num_blocks, "channel": env.link.kind,
                   "scheme": cfg.ppo.scheme, "fc": cfg.codec.fc if SCHEMES[cfg.ppo.scheme]
                   else "", "reward": cfg.ppo.reward, "n_images": n if images else 0}
            row.update(image_metrics(outcome, env._fid_extractor, judge, cfg.eval.bootstrap,
                                     cfg.seed))
            if held is not None and name in held["policies"]:
                h = held["policies"][name]
                dp = held["policies"].get("causal_dp", {}).get("latent_mse")
                row.update(episodes=held["n"], held_out_mse=h["latent_mse"],
                           vs_causal_dp=h["latent_mse"] / dp if dp else float("nan"))
                if name == "ppo" and held.get("ratio_ci"):
                    row["vs_causal_dp_lo"], row["vs_causal_dp_hi"] = held["ratio_ci"]
            rows.append(row)
    power_saved(rows, "fid" if images else "latent_mse")
    path = Path(out_csv) if out_csv else Path(cfg.out_dir) / "ppo" / "fig10.csv"
    _write_csv(path, rows, FIG10_COLUMNS)
    return path


def block_table(cfg: MegConfig, counts: Sequence[int], main: Optional[dict] = None,
                out_csv: Optional[str | Path] = None) -> Path:
    """PPO, causal DP, oracle and equal power at each block count in ``counts`` (held-out latent
    MSE with intervals, and each policy against the causal DP), at the main run's evaluation
    SNR; a block count other than ``ppo.num_blocks`` trains its own policy (``ppo.block_frames``
    frames) under ``{out_dir}/blocks/B<count>``, or with ``ppo.block_frames: 0`` the main policy
    acts there as it is (its observation does not depend on B) (``main``: the main run's
    results, reused for its count)."""
    rows: list[dict[str, Any]] = []
    for B in counts:
        if main is not None and B == cfg.ppo.num_blocks:
            res = main
        elif cfg.ppo.block_frames == 0:  # the main policy as it is (its state has no B in it)
            cfg_b = copy.deepcopy(cfg)
            cfg_b.ppo.num_blocks = int(B)
            source = make_source(cfg_b)
            actor = ppo_train.load_policy(cfg_b, ppo_train.run_dir(cfg) / "checkpoint.pt",
                                          env=make_env(cfg_b, source=source, num_envs=2),
                                          trained_blocks=cfg.ppo.num_blocks)
            res = {**ppo_train.held_out(cfg_b, source, actor), "train_seconds": 0.0, "frames": 0}
        else:
            cfg_b = copy.deepcopy(cfg)
            cfg_b.ppo.num_blocks, cfg_b.ppo.checkpoint = int(B), None
            cfg_b.ppo.total_frames = cfg.ppo.block_frames or cfg.ppo.total_frames
            # the same frames per episode batch, so as many PPO iterations as the main run
            cfg_b.ppo.num_envs = max(1, cfg.ppo.num_envs * cfg.ppo.num_blocks // int(B))
            cfg_b.ppo.fig10_powers = cfg_b.ppo.block_counts = None
            cfg_b.out_dir = str(Path(cfg.out_dir) / "blocks" / f"B{B}")
            _pinned_codec(cfg, cfg_b)
            res = ppo_train.main(cfg_b)
        pol = res["policies"]
        dp = pol.get("causal_dp", {}).get("latent_mse")
        for name in POLICY_NAMES:
            if name not in pol:
                continue
            r = pol[name]
            rows.append({"num_blocks": B, "channel": res.get("channel", cfg.ppo.channel),
                         "snr_db": res["snr_db"], "policy": name, "latent_mse": r["latent_mse"],
                         "latent_mse_lo": r.get("latent_mse_lo"),
                         "latent_mse_hi": r.get("latent_mse_hi"),
                         "vs_causal_dp": r["latent_mse"] / dp if dp else float("nan"),
                         "n": res["n"], "train_seconds": res.get("train_seconds")
                         if name == "ppo" else "", "frames": res.get("frames")
                         if name == "ppo" else ""})
    path = Path(out_csv) if out_csv else Path(cfg.out_dir) / "ppo" / "blocks.csv"
    _write_csv(path, rows, BLOCK_COLUMNS)
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)  # NaN (no images: gaussian seeds) is written as "nan", which float() reads
    atomic_write_text(path, buf.getvalue())


def check(cfg: MegConfig) -> None:
    """What the sweeps need, before anything is trained or written: every block count divides
    the seed (checked by building a small env of each)."""
    if cfg.ppo.block_counts:
        source = make_source(cfg)
        for B in cfg.ppo.block_counts:
            try:
                make_env(cfg, source=source, num_envs=2, num_blocks=int(B))
            except ConfigError as e:
                raise ConfigError("ppo.block_counts", list(cfg.ppo.block_counts),
                                  f"block counts the seed allows ({e})") from None


def main(cfg: MegConfig) -> dict[str, Any]:
    """`meg train-ppo`: train and evaluate (:func:`meg_lightning.power.train.main`), then the
    Fig. 10 sweep when ``ppo.fig10_powers`` is set and the block-count table when
    ``ppo.block_counts`` is."""

    check(cfg)
    results = ppo_train.main(cfg)
    if cfg.ppo.fig10_powers:
        results["fig10_csv"] = str(fig10_sweep(cfg, cfg.ppo.fig10_powers, main=results))
    if cfg.ppo.block_counts:
        results["blocks_csv"] = str(block_table(cfg, cfg.ppo.block_counts, main=results))
    return results
