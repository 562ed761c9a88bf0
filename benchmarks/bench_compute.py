"""UE / ES computation per image of every scheme (evaluation/compute.py), measured.

Counts FLOPs with FlopCounterMode (1 multiply-add = 2 FLOPs; element-wise ops not counted) for
the components of a pipeline and the project's codecs, then prints Markdown tables: GFLOPs per
component, and per scheme the UE U-Net evaluations, UE GFLOPs and ES GFLOPs.

    python benchmarks/bench_compute.py                       # model=mini, fc 0.25/0.5/0.75
    python benchmarks/bench_compute.py --model tiny
    python benchmarks/bench_compute.py --sd15                # SD-v1.5 shapes on the meta device:
                                                             # no weights, no memory, seconds

``--sd15`` builds SD-v1.5's exact U-Net / VAE / CLIP text encoder configurations
(generation/sd15.py) and the paper's codec (Table III, hidden 9000 at fc 0.5, the same ratio at
other fc) on the ``meta`` device, so the counts are exact for those shapes without 2+ GB of
weights. ``--dm-steps`` is the U-Net steps an ``X+dm`` receiver runs per image in the example rows
(the real number is per cell: the sweep reports it).
"""

from __future__ import annotations

import argparse
import math
import time
from types import SimpleNamespace

import torch
from torch import nn

from meg_lightning.evaluation.compute import ComputeParts, format_parts, scheme_compute


class PairCodec(nn.Module):
    """(C_w, C_psi^-1) as one module with encode / decode (what CodecModule exposes)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.k = encoder.k

    def encode(self, z):
        return self.encoder(z)

    def decode(self, x):
        return self.decoder(x)


def project_pipeline(model: str):
    """(pipe, latent_shape, es_steps, guidance, codec_cfg) of a preset, loaded as the sweep does."""
    from meg_lightning.compose import load_config
    from meg_lightning.generation import latent_shape, load_pipeline

    cfg = load_config([f"model={model}", "generation.device=cpu", "logger=none"])
    pipe = load_pipeline(cfg, torch.device("cpu"))
    return (pipe, latent_shape(pipe, cfg.generation), cfg.generation.num_inference_steps,
            cfg.generation.guidance_scale, cfg.codec)


def sd15_meta():
    """SD-v1.5's components on the meta device (exact shapes, no weights)."""
    from meg_lightning.compose import load_config
    from meg_lightning.generation.sd15 import MAX_LENGTH, build_components

    cfg = load_config(["model=paper", "logger=none"])
    pipe = SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=MAX_LENGTH),
                           **build_components(device="meta"))
    shape = (4, cfg.generation.height // 8, cfg.generation.width // 8)
    return (pipe, shape, cfg.generation.num_inference_steps, cfg.generation.guidance_scale,
            cfg.codec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mini", choices=["mini", "tiny"])
    ap.add_argument("--sd15", action="store_true", help="SD-v1.5 shapes on the meta device")
    ap.add_argument("--fcs", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--dm-steps", type=float, default=5.0,
                    help="U-Net steps per image of the example +dm rows")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from dataclasses import replace

    from meg_lightning.codecs.base import build_codec, code_length

    t0 = time.perf_counter()
    if args.sd15:
        pipe, shape, steps, guidance, codec_cfg = sd15_meta()
        name = "SD-v1.5 shapes (meta device), 512x512"
    else:
        pipe, shape, steps, guidance, codec_cfg = project_pipeline(args.model)
        name = f"model={args.model}"
    t_load = time.perf_counter() - t0
    numel = math.prod(shape)
    device = next(pipe.unet.parameters()).device
    codecs, symbols = {}, {}
    for fc in args.fcs:
        with torch.device(device):
            enc, dec = build_codec(shape, replace(codec_cfg, fc=fc))
        codecs[fc], symbols[fc] = PairCodec(enc, dec), code_length(fc, numel)
    t1 = time.perf_counter()
    parts = ComputeParts.measure(pipe, shape, steps, guidance, codecs=codecs, linear_codes=None,
                                 symbols=symbols)
    t_measure = time.perf_counter() - t1

    print(f"## {name}: latent {'x'.join(map(str, shape))} (|z| = {numel}), {steps} DDIM steps, "
          f"guidance {guidance:g}, codec arch {codec_cfg.arch}")
    print(f"(load {t_load:.1f} s, measure {t_measure:.1f} s)\n")
    print("| component | GFLOPs per image |\n|---|---:|")
    for line in format_parts(parts).splitlines():
        label, value = line[:22].strip(), line[22:].split()[0]
        print(f"| {label} | {float(value):.6g} |")
    print("\n| scheme | fc | symbols | UE U-Net evals | UE GFLOPs | ES GFLOPs |")
    print("|---|---:|---:|---:|---:|---:|")
    from meg_lightning.generation import vae_scale_factor

    f = vae_scale_factor(pipe.vae)
    rows = [("centralized", None, 3 * shape[1] * f * shape[2] * f), ("feature", None, numel)]
    for fc in args.fcs:
        rows += [(s, fc, symbols[fc]) for s in ("meg", "linear", "digital", "digital-image")]
    rows += [(f"{s}+dm", args.fcs[0] if s != "feature" else None,
              symbols[args.fcs[0]] if s != "feature" else numel) for s in ("feature", "meg")]
    rows += [("prompt", None, None)]
    for scheme, fc, sym in rows:
        c = scheme_compute(scheme, parts=parts, fc=fc,
                           ue_steps_run=args.dm_steps if scheme.endswith("+dm") else 0.0)
        print(f"| {scheme} | {'' if fc is None else f'{fc:g}'} | {'' if sym is None else sym} | "
              f"{c.ue_unet_evals:g} | {c.ue_gflops:.6g} | {c.es_gflops:.6g} |")


if __name__ == "__main__":
    main()
