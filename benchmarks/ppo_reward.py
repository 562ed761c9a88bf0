"""The paper's reward against the latent-MSE proxy: PPO trained with ``ppo.reward=fid`` (the
set-level FID of the N episodes of a batch, eq. 34) and with ``ppo.reward=latent_mse``, on the
same `mini` seeds, budget and frames; both judged on the same held-out test images.

    python benchmarks/ppo_reward.py                       # meg-adaptive fc 0.5, 0 dB, B = 8
    python benchmarks/ppo_reward.py --frames 30000 --snr-db 5

Needs the demo's latent cache (``make demo`` or ``meg latents`` with the demo's data settings).
Reported per reward: held-out FID (bootstrap interval), semantic accuracy, PSNR and latent MSE
of PPO and of equal power on the test images, and the training time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

from meg_lightning.bench import cpu_model
from meg_lightning.compose import load_config
from meg_lightning.power import sweep

DATA = ["model=mini", "data.num_prompts=512", "data.test_fraction=0.25",
        "data.cache_dir=data/demo/latents", "data.gen_batch_size=64"]


def run(reward: str, args: argparse.Namespace, root: Path) -> dict:
    p_max = 10 ** (args.snr_db / 10) * args.blocks  # N0 = 1 mW: the budget of this SNR
    cfg = load_config([*DATA, f"out_dir={root / reward}", "logger=none", f"seed={args.seed}",
                       "ppo.scheme=meg-adaptive", f"codec.fc={args.fc}",
                       f"ppo.num_blocks={args.blocks}", f"ppo.reward={reward}",
                       "ppo.avg_snr_db=null", f"ppo.p_max_mw={p_max}",
                       f"ppo.train_snr_db=[{args.snr_db},{args.snr_db}]",
                       f"ppo.num_envs={args.envs}", f"ppo.frames_per_batch={args.envs * args.blocks}",
                       f"ppo.minibatch_size={args.envs * args.blocks // 2}", f"ppo.lr={args.lr}",
                       f"ppo.total_frames={args.frames}", f"ppo.eval_episodes={args.episodes}",
                       f"ppo.fig10_powers=[{p_max}]", f"eval.num_images={args.images}"])
    res = sweep.main(cfg)
    rows = {r["policy"]: r for r in csv.DictReader(open(res["fig10_csv"]))}
    return {"train_seconds": res["train_seconds"], "frames": res["frames"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=65536, help="PPO frames per reward")
    ap.add_argument("--envs", type=int, default=128, help="episodes per batch (the FID's set)")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--snr-db", type=float, default=0.0, help="average SNR of the budget")
    ap.add_argument("--fc", type=float, default=0.5)
    ap.add_argument("--images", type=int, default=128, help="held-out test images")
    ap.add_argument("--episodes", type=int, default=2048, help="held-out latent-MSE draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}); meg-adaptive fc {args.fc}, "
          f"{args.blocks} blocks, {args.snr_db:g} dB, {args.frames} frames, {args.envs} envs")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for reward in ("latent_mse", "fid"):
            out[reward] = run(reward, args, Path(d))
    print("| reward | train s | PPO FID [95%] | equal FID | PPO acc. | equal acc. | PPO PSNR | "
          "PPO held-out MSE / causal DP |")
    print("|---|---|---|---|---|---|---|---|")
    for reward, r in out.items():
        ppo, eq = r["rows"]["ppo"], r["rows"]["equal"]
        f = lambda k, row=ppo: float(row[k])  # noqa: E731
        print(f"| {reward} | {r['train_seconds']:.0f} | {f('fid'):.1f} [{f('fid_lo'):.1f}, "
              f"{f('fid_hi'):.1f}] | {float(eq['fid']):.1f} | {f('accuracy'):.3f} | "
              f"{float(eq['accuracy']):.3f} | {f('psnr'):.2f} | {f('vs_causal_dp'):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
