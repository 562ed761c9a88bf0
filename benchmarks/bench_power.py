"""Power-control environment and PPO throughput.

1. Env steps/s of the batched TensorDict env (:class:`MEGPowerEnv`, N episodes in one batch)
   against a per-episode Python loop doing the same math (the same seed source, fading draw,
   budget rule of eqs. 32-33 and the same channel layer at the last block, one episode at a time),
   in the same process and alternating order across rounds. Both run the equal-power policy.
2. PPO frames/s of `meg train-ppo` (collection + GAE + updates, the default proxy settings).

    python benchmarks/bench_power.py                  # N = 1024, 3 rounds, 200k PPO frames
    python benchmarks/bench_power.py --ppo-frames 0   # env only

Reported: steps/s of each env implementation and their ratio (batched / loop), PPO frames/s.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

import torch

from meg_lightning.bench import cpu_model
from meg_lightning.channels import make as make_channel
from meg_lightning.compose import load_config
from meg_lightning.power import EqualPolicy, GaussianSeeds, MEGPowerEnv
from meg_lightning.power.train import main as train_ppo


def time_batched(n: int, blocks: int, seed_dim: int, episodes_rounds: int) -> float:
    """Steps/s of MEGPowerEnv.rollout with N parallel episodes (env + TensorDict overhead)."""
    env = MEGPowerEnv(GaussianSeeds(seed_dim), num_envs=n, num_blocks=blocks, seed=0)
    policy = EqualPolicy(env)
    env.rollout(blocks, policy)  # warm-up
    t0 = time.perf_counter()
    for _ in range(episodes_rounds):
        env.rollout(blocks, policy)
    return episodes_rounds * n * blocks / (time.perf_counter() - t0)


def time_math(n: int, blocks: int, seed_dim: int, rounds: int) -> float:
    """Steps/s of the episode math alone, batched, without the env: draw N seeds and their
    fading, send them through the channel layer with equal power, score the latent MSE. The
    bound of any batched env that does this math (what the TorchRL env adds is the rest)."""
    source = GaussianSeeds(seed_dim)
    link = make_channel("rayleigh", snr_db=20.0, num_blocks=blocks, equalizer="mmse",
                        normalize=False)
    rng = torch.Generator().manual_seed(0)
    power = torch.ones(n, blocks)
    t0 = time.perf_counter()
    for _ in range(rounds):
        x, z = source.sample(n, rng)
        h = torch.complex(*(torch.randn(2, n, blocks, generator=rng) * math.sqrt(0.5)))
        x_hat = link(x, mode="eval", power=power, h=h, generator=rng)["x_hat"]
        (source.decode(x_hat) - z).square().mean(1)
    return rounds * n * blocks / (time.perf_counter() - t0)


def time_loop(n: int, blocks: int, seed_dim: int) -> float:
    """Steps/s of the same episodes run one at a time in plain Python / torch."""
    source = GaussianSeeds(seed_dim)
    link = make_channel("rayleigh", snr_db=20.0, num_blocks=blocks, equalizer="mmse",
                        normalize=False)
    rng = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n):
        x, z = source.sample(1, rng)  # (1, k)
        fading = torch.randn(1, blocks, 2, generator=rng) * math.sqrt(0.5)
        budget, power = 1.0, [0.0] * blocks
        for t in range(blocks):
            g_t = float(fading[0, t].square().sum())  # the state the agent would observe
            a = 1.0 / blocks  # equal power
            spend = budget if t == blocks - 1 else min(a, budget)
            power[t], budget = spend, max(budget - spend, 0.0)
            del g_t
        h = torch.complex(fading[..., 0], fading[..., 1])
        x_hat = link(x, mode="eval", power=torch.tensor([power]) * blocks, h=h,
                     generator=rng)["x_hat"]
        float((source.decode(x_hat) - z).square().mean())  # the terminal latent MSE
    return n * blocks / (time.perf_counter() - t0)


def time_ppo(frames: int) -> tuple[float, float]:
    """(frames/s of training, seconds) for `meg train-ppo` defaults with ``frames`` frames."""
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config([f"out_dir={d}", "logger=none", f"ppo.total_frames={frames}",
                           "ppo.eval_episodes=256"])
        res = train_ppo(cfg)
    return res["frames"] / res["train_seconds"], res["train_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=1024, help="N parallel episodes of the batched env")
    ap.add_argument("--blocks", type=int, default=8, help="B fading blocks per episode")
    ap.add_argument("--seed-dim", type=int, default=512, help="seed length k (real symbols)")
    ap.add_argument("--loop-episodes", type=int, default=256,
                    help="episodes timed in the per-episode loop (its rate does not depend on N)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--ppo-frames", type=int, default=200_000, help="PPO frames to time (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")

    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    batched, loop, bare = [], [], []
    for r in range(args.rounds):
        order = (("batched", "math", "loop") if r % 2 == 0 else ("loop", "math", "batched"))
        for which in order:
            if which == "batched":
                batched.append(time_batched(args.envs, args.blocks, args.seed_dim, 5))
            elif which == "math":
                bare.append(time_math(args.envs, args.blocks, args.seed_dim, 5))
            else:
                loop.append(time_loop(args.loop_episodes, args.blocks, args.seed_dim))
    b, lp, m = statistics.median(batched), statistics.median(loop), statistics.median(bare)
    print(f"env steps/s, N={args.envs}, B={args.blocks}, k={args.seed_dim} (median of {args.rounds}):")
    print(f"  batched MEGPowerEnv (TensorDict)  {b:12,.0f}")
    print(f"  the episode math alone, batched   {m:12,.0f}   (the bound of a batched env)")
    print(f"  per-episode Python loop           {lp:12,.0f}")
    print(f"  ratio batched / loop              {b / lp:12.1f}x")
    print(f"  ratio math alone / loop           {m / lp:12.1f}x")
    print(f"  share of the env's time in the math {m and b / m:10.0%}")
    if args.ppo_frames > 0:
        fps, secs = time_ppo(args.ppo_frames)
        print(f"PPO training: {fps:,.0f} frames/s ({args.ppo_frames} frames in {secs:.1f} s, "
              "collection + GAE + 4 epochs of minibatch updates)")


if __name__ == "__main__":
    main()
