"""`make train-mini` throughput: optimiser steps/s of each stage at 1 against 2 torch threads.

Each stage of :mod:`meg_lightning.mini.train` runs for a few steps with the shipped sizes (model,
batch sizes), once per thread count, in the same process, rounds alternating; the step rate times
the shipped step counts gives the full run's time. Prints a Markdown table.

    python benchmarks/bench_mini_train.py --steps 40 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace

import torch

from meg_lightning.bench import machine
from meg_lightning.mini.train import MiniTrainConfig, train_classifier, train_unet, train_vae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps per stage and run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best is kept)")
    args = ap.parse_args()

    full = MiniTrainConfig()
    stages = {"vae": (train_vae, full.vae_steps), "classifier": (train_classifier,
                                                                 full.classifier_steps),
              "unet": (train_unet, full.unet_steps)}
    best = {(s, t): float("inf") for s in stages for t in args.threads}
    for _ in range(args.rounds):
        for t in args.threads:
            torch.set_num_threads(t)
            tmp = tempfile.mkdtemp(prefix="bench-mini-")
            cfg = replace(full, out_dir=tmp, weights_dir=tmp, num_threads=t,
                          vae_steps=args.steps, classifier_steps=args.steps,
                          unet_steps=args.steps, num_latents=1024,
                          checkpoint_every=10 * args.steps)
            for s, (fn, _) in stages.items():  # vae first: the unet stage needs its latents
                best[(s, t)] = min(best[(s, t)], fn(cfg)["seconds"] / args.steps)
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {machine()}; shipped sizes, {args.steps} steps per stage, best of "
          f"{args.rounds} alternating rounds\n")
    ref = args.threads[0]
    print("| stage | " + " | ".join(f"s/step, {t} thr" for t in args.threads)
          + f" | full run at {args.threads[-1]} thr | ratio vs {ref} thr |")
    print("|---|" + "---|" * (len(args.threads) + 2))
    total = {t: 0.0 for t in args.threads}
    for s, (_, n) in stages.items():
        for t in args.threads:
            total[t] += best[(s, t)] * n
        last = args.threads[-1]
        print(f"| {s} ({n} steps) | " + " | ".join(f"{best[(s, t)]:.3f}" for t in args.threads)
              + f" | {best[(s, last)] * n / 60:.1f} min | {best[(s, ref)] / best[(s, last)]:.2f}x |")
    print(f"| total | | | {total[args.threads[-1]] / 60:.1f} min | "
          f"{total[ref] / total[args.threads[-1]]:.2f}x |")


if __name__ == "__main__":
    main()
