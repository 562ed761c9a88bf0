"""GPU check: the paper-scale rehearsal in fp16 on one CUDA GPU, with throughput in the same run.

    python benchmarks/gpu_check.py                      # CUDA, sd15-random (SD-v1.5 shapes), fp16
    python benchmarks/gpu_check.py --model paper        # the same with the real SD-v1.5 weights
    python benchmarks/gpu_check.py --reduced            # CPU, tiny, float32 (tested)

One process, one device, in this order (each number beside its obvious alternative):

1. latents/s: ``LatentCache.build`` (batched prompts, sharded atomic writes, checksums) against a
   plain loop of stock ``StableDiffusionPipeline`` calls, one prompt per call, same prompts and
   per-sample seeds, same loaded fp16 pipeline (the cache's figure also includes its own pipeline
   load, reported separately);
2. codec training samples/s at batch 1 and batch 8 (``CodecModule`` + Lightning ``Trainer``,
   ``16-mixed`` on CUDA; ``arch=paper``, 563,430,184 parameters at SD sizes), after warm-up steps;
3. eval images/s: ``meg eval``'s sweep (centralized, feature, meg, linear at one SNR on AWGN,
   512x512 decoding, Inception-FID with random weights in torch-fidelity's format) on the cached
   test latents: (test images x cells) / seconds, I_0 decoding included.

It ends with a Markdown table (GPU name, peak GPU memory per part) and ``--json``. Budget: about
3 minutes on one H200 for the defaults plus ~1 minute to build sd15-random once; at most 8.
Record the numbers with the GPU's name in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from meg_lightning.codecs import CodecModule
from meg_lightning.compose import load_config
from meg_lightning.data import build_datamodule
from meg_lightning.data.cache import LatentCache
from meg_lightning.data.datamodule import TensorLatentDataModule
from meg_lightning.data.prompts import get_prompts
from meg_lightning.evaluation.cells import enumerate_cells
from meg_lightning.evaluation.sweep import run_sweep
from meg_lightning.generation import load_pipeline, seed_for
from meg_lightning.metrics.fid import InceptionFeatures
from meg_lightning.rehearsal import ensure_random_inception


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reduced", action="store_true",
                    help="CPU, model=tiny, float32, tiny sizes: checks the script in seconds")
    ap.add_argument("--model", default=None, help="sd15-random (default), paper or a folder")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 16; reduced 4)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50; reduced 2)")
    ap.add_argument("--codec-steps", type=int, default=None, help="timed steps per batch size")
    ap.add_argument("--out", default=None, help="working folder (default: a temp folder)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args()
    red = a.reduced
    a.model = a.model or ("tiny" if red else "sd15-random")
    a.n = a.n or (4 if red else 16)
    a.steps = a.steps or (2 if red else 50)
    a.codec_steps = a.codec_steps or (2 if red else 20)
    for key in ("n", "steps", "codec_steps"):
        if getattr(a, key) <= 0:
            ap.exit(2, f"gpu_check: error: --{key.replace('_', '-')}={getattr(a, key)}: "
                       "expected a positive integer\n")
    if a.n < 4:
        ap.exit(2, f"gpu_check: error: --n={a.n}: expected >= 4 (half the prompts are eval "
                   "images)\n")
    if not red and not torch.cuda.is_available():
        ap.exit(2, "gpu_check: error: no CUDA device: expected a GPU (or --reduced for the CPU "
                   "check of the script)\n")
    return a


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    v = torch.cuda.max_memory_allocated(device) / 1024 ** 3
    torch.cuda.reset_peak_memory_stats(device)
    return v


def bench_latents(base: list[str], device: torch.device) -> dict:
    cfg = load_config(base)
    t = time.perf_counter()
    pipe = load_pipeline(cfg)
    sync(device)
    load_s = time.perf_counter() - t
    g = cfg.generation
    prompts = get_prompts(cfg.data.prompts, cfg.data.num_prompts, cfg.data.prompt_column)

    def stock(i: int, p: str) -> None:
        pipe(p, height=g.height, width=g.width, num_inference_steps=g.num_inference_steps,
             guidance_scale=g.guidance_scale, output_type="latent",
             generator=torch.Generator().manual_seed(seed_for(cfg.seed, i)))

    stock(0, prompts[0])  # warm-up (kernels, allocator)
    sync(device)
    t = time.perf_counter()
    for i, p in enumerate(prompts):
        stock(i, p)
    sync(device)
    stock_s = time.perf_counter() - t
    t = time.perf_counter()
    load_pipeline(cfg)  # what the cache's own load costs once the files are in the page cache
    sync(device)
    reload_s = time.perf_counter() - t
    t = time.perf_counter()
    LatentCache(cfg).build(progress=False)  # loads its own pipeline
    sync(device)
    cache_s = time.perf_counter() - t
    n = len(prompts)
    return {"pipe": pipe, "load_s": load_s, "reload_s": reload_s,
            "latents_per_s_stock": n / stock_s, "latents_per_s_cache": n / cache_s,
            "latents_per_s_cache_excl_load": n / max(cache_s - reload_s, 1e-9),
            "latents_peak_gib": peak_gib(device)}


def bench_codec(cfg, latent_shape, device: torch.device, steps: int) -> dict:
    warmup = 2
    res: dict = {}
    model = None
    for bs in (1, 8):
        marks: list[float] = []

        class Clock(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == warmup and not marks:
                    sync(device)
                    marks.append(time.perf_counter())

            def on_train_end(self, trainer, pl_module):
                sync(device)
                marks.append(time.perf_counter())

        torch.manual_seed(0)
        model = CodecModule.from_config(cfg, latent_shape)
        # synthetic latents of the real shape: throughput does not depend on their values
        z = torch.randn(max(64, 8 * bs), *latent_shape)
        dm = TensorLatentDataModule(z, batch_size=bs, val_fraction=0.0, test_fraction=0.0)
        trainer = L.Trainer(accelerator=device.type, devices=1, max_steps=warmup + steps,
                            max_epochs=-1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Clock()],
                            precision="16-mixed" if device.type == "cuda" else "32-true")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, datamodule=dm)
        res[f"codec_samples_per_s_b{bs}"] = bs * steps / (marks[1] - marks[0])
        res[f"codec_peak_gib_b{bs}"] = peak_gib(device)
        del trainer
    res["codec_params"] = sum(p.numel() for p in model.parameters())
    res["codec"] = model.eval().to(device)
    return res


def bench_eval(base: list[str], out: Path, pipe, codec, device: torch.device) -> dict:
    cfg = load_config(base + [f"out_dir={out / 'eval'}", "eval.channels=[awgn]",
                              "eval.schemes=[centralized,feature,meg,linear]", "eval.snrs_db=[10]",
                              "eval.fcs=[0.5]", "eval.bootstrap=0",
                              "eval.fid_features=inception"])
    extractor = InceptionFeatures(ensure_random_inception(out / "inception-random.pth"))
    t = time.perf_counter()
    res = run_sweep(cfg, vae=pipe.vae, codecs={0.5: codec}, feature_extractor=extractor,
                    progress=False)
    sync(device)
    dt = time.perf_counter() - t
    n_images = int(res.rows[0]["n_images"])
    cells = len(enumerate_cells(cfg))
    return {"eval_images": n_images, "eval_cells": cells,
            "eval_images_per_s": n_images * cells / dt, "eval_peak_gib": peak_gib(device)}


def main() -> int:
    a = parse()
    device = torch.device("cpu" if a.reduced else "cuda")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    dtype = "float32" if a.reduced else "float16"
    base = [f"model={a.model}", f"generation.device={device.type}", f"generation.dtype={dtype}",
            f"data.cache_dir={out / 'latents'}", f"data.num_prompts={a.n}",
            f"data.shard_size={a.n}", f"generation.num_inference_steps={a.steps}",
            f"data.gen_batch_size={4 if a.reduced else 8}", "data.val_fraction=0.0",
            "data.test_fraction=0.5", "logger=none"]
    if a.model not in ("tiny", "mini"):
        base.append("codec.arch=paper")
    t0 = time.perf_counter()
    print(f"gpu_check: {a.model} on {device} ({dtype}), {a.n} prompts, {a.steps} DDIM steps, "
          f"out={out}", flush=True)

    res: dict = {"model": a.model, "device": device.type, "dtype": dtype, "prompts": a.n,
                 "steps": a.steps,
                 "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print("[1/3] latents ...", flush=True)
    lat = bench_latents(base, device)
    pipe = lat.pop("pipe")
    res.update(lat)
    print("[2/3] codec ...", flush=True)
    cfg = load_config(base)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    cod = bench_codec(cfg, tuple(dm.latent_shape), device, a.codec_steps)
    codec = cod.pop("codec")
    res.update(cod)
    print("[3/3] eval ...", flush=True)
    res.update(bench_eval(base, out, pipe, codec, device))  # the whole test split
    res["total_s"] = time.perf_counter() - t0

    name = res["gpu"] or "CPU (reduced mode)"
    print(f"\nmachine: {name}; torch {torch.__version__}; {a.model}, {dtype}, {a.n} prompts, "
          f"{a.steps} DDIM steps; total {res['total_s']:.0f} s\n")
    print("| measurement | value | peak GPU memory (GiB) |")
    print("|---|---:|---:|")
    print(f"| stock `StableDiffusionPipeline` loop, 1 prompt per call | "
          f"{res['latents_per_s_stock']:.2f} latents/s | {res['latents_peak_gib']:.1f} |")
    print(f"| `LatentCache.build` (incl. its pipeline load, {res['reload_s']:.1f} s warm) | "
          f"{res['latents_per_s_cache']:.2f} latents/s "
          f"({res['latents_per_s_cache_excl_load']:.2f} excl. load) | |")
    for bs in (1, 8):
        print(f"| codec training, batch {bs} ({res['codec_params']:,} parameters) | "
              f"{res[f'codec_samples_per_s_b{bs}']:.1f} samples/s | "
              f"{res[f'codec_peak_gib_b{bs}']:.1f} |")
    print(f"| eval sweep ({res['eval_images']} images x {res['eval_cells']} cells, Inception-FID) "
          f"| {res['eval_images_per_s']:.2f} images/s | {res['eval_peak_gib']:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
