"""Latent cache throughput (tiny or mini preset) against a plain loop of stock diffusers calls.

Both sides generate the same prompts with the same per-sample seeds in the same process; the
cache adds batching across prompts, sharded atomic writes and checksums. Rounds alternate between
the two sides so that load from other processes hits both alike. Prints a Markdown table.

    python benchmarks/bench_latents.py --n 32 --batch-sizes 1 4 16 --rounds 3
    python benchmarks/bench_latents.py --model mini --steps 25 --batch-sizes 1 16 64 --threads 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import torch

from meg_lightning.bench import machine
from meg_lightning.compose import load_config
from meg_lightning.data.cache import LatentCache
from meg_lightning.data.prompts import get_prompts
from meg_lightning.generation import load_pipeline, seed_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="latents per measurement")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (best is kept)")
    ap.add_argument("--model", default="tiny", choices=["tiny", "mini"], help="offline preset")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = tempfile.mkdtemp(prefix="bench-latents-")
    base = [f"model={args.model}", f"data.num_prompts={args.n}", f"generation.num_inference_steps={args.steps}",
            "generation.device=cpu", "logger=none", f"data.shard_size={args.n}"]
    cfg0 = load_config(base)
    pipe = load_pipeline(cfg0)
    g = cfg0.generation
    prompts = get_prompts(cfg0.data.prompts, args.n, cfg0.data.prompt_column)

    def stock_loop() -> float:
        t = time.perf_counter()
        for i, p in enumerate(prompts):
            pipe(p, height=g.height, width=g.width, num_inference_steps=g.num_inference_steps,
                 guidance_scale=g.guidance_scale, generator=torch.Generator().manual_seed(
                     seed_for(cfg0.seed, i)), output_type="latent")
        return time.perf_counter() - t

    def cache_run(bs: int) -> float:
        d = os.path.join(tmp, f"bs{bs}")
        shutil.rmtree(d, ignore_errors=True)
        cfg = load_config(base + [f"data.gen_batch_size={bs}", f"data.cache_dir={d}"])
        t = time.perf_counter()
        LatentCache(cfg).build(progress=False)  # includes loading the (tiny) pipeline once
        return time.perf_counter() - t

    stock_loop()  # warm-up
    best = {"stock": float("inf"), **{bs: float("inf") for bs in args.batch_sizes}}
    for _ in range(args.rounds):
        best["stock"] = min(best["stock"], stock_loop())
        for bs in args.batch_sizes:
            best[bs] = min(best[bs], cache_run(bs))
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {machine()}; {args.model} preset, {args.n} latents, {args.steps} DDIM "
          f"steps, best of {args.rounds} alternating rounds\n")
    print("| method | latents/s | ratio vs stock loop |")
    print("|---|---|---|")
    ref = args.n / best["stock"]
    print(f"| stock `StableDiffusionPipeline` loop, 1 prompt per call | {ref:.1f} | 1.00 |")
    for bs in args.batch_sizes:
        r = args.n / best[bs]
        print(f"| `LatentCache.build`, gen_batch_size={bs} | {r:.1f} | {r / ref:.2f} |")


if __name__ == "__main__":
    main()
