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
weights; its linear code is a ``LinearCode`` of those shapes with an unfitted KLT basis, whose
cost is the closed form 2 k |z| per side (the output says so). ``--dm-steps`` is the U-Net steps
an ``X+dm`` receiver runs per image in the example rows (the real number is per cell: the sweep
reports it).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from types import SimpleNamespace

import torch
from torch import nn

from meg_lightning.codecs import LinearCode, build_codec, code_length
from meg_lightning.compose import load_config
from meg_lightning.evaluation.compute import scheme_compute
from meg_lightning.generation import decode_latents, latent_shape, load_pipeline, vae_scale_factor
from meg_lightning.generation.sd15 import MAX_LENGTH, build_components
from meg_lightning.metrics.flops import (ComputeParts, codec_decode_gflops, codec_encode_gflops,
                                         ldpc_decode_gflops, linear_code_gflops,
                                         linear_decode_gflops, linear_encode_gflops)
from meg_lightning.schemes import DiffusionReceiver
from meg_lightning.schemes.centralized import CentralizedScheme
from meg_lightning.schemes.digital import LatentDigitalScheme
from meg_lightning.schemes.digital_image import DigitalImageScheme
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.linear import LinearScheme
from meg_lightning.schemes.meg import LatentScheme
from meg_lightning.schemes.prompt import PromptScheme
from meg_lightning.schemes.quantizer import LatentQuantizer


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
    """(pipe, latent_shape, es_steps, guidance, cfg) of a preset, loaded as the sweep does."""
    cfg = load_config([f"model={model}", "generation.device=cpu", "logger=none"])
    pipe = load_pipeline(cfg, torch.device("cpu"))
    return (pipe, latent_shape(pipe, cfg.generation), cfg.generation.num_inference_steps,
            cfg.generation.guidance_scale, cfg)


def sd15_meta():
    """SD-v1.5's components on the meta device (exact shapes, no weights)."""
    cfg = load_config(["model=paper", "logger=none"])
    pipe = SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=MAX_LENGTH),
                           **build_components(device="meta"))
    shape = (4, cfg.generation.height // 8, cfg.generation.width // 8)
    return pipe, shape, cfg.generation.num_inference_steps, cfg.generation.guidance_scale, cfg


def linear_code(shape: tuple[int, ...], fc: float, device: torch.device) -> LinearCode:
    """The linear code the ``linear`` rows cost. On a real device: fitted on |z| + 1 Gaussian
    latents, so it keeps all k components (its cost does not depend on the data). On the meta
    device: a LinearCode of the exact shapes with an unfitted KLT basis (fitting one at SD-v1.5
    size needs training latents and ~0.5 GB per rate), which costs 2 k |z| per side."""
    numel = math.prod(shape)
    if device.type != "meta":
        z = torch.randn(numel + 1, *shape, generator=torch.Generator().manual_seed(0))
        return LinearCode.fit(z, fc)
    k = code_length(fc, numel)
    with torch.device("meta"):
        mean, basis = torch.zeros(numel), torch.empty(numel, k)
    return LinearCode(mean, basis, torch.ones(k), shape, k, total_var=float(k))


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

    t0 = time.perf_counter()
    if args.sd15:
        pipe, shape, steps, guidance, cfg = sd15_meta()
        name = "SD-v1.5 shapes (meta device), 512x512"
    else:
        pipe, shape, steps, guidance, cfg = project_pipeline(args.model)
        name = f"model={args.model}"
    t_load = time.perf_counter() - t0
    numel = math.prod(shape)
    device = next(pipe.unet.parameters()).device
    arch = cfg.codec.arch
    codecs, linear, symbols = {}, {}, {}
    for fc in args.fcs:
        with torch.device(device):
            enc, dec = build_codec(shape, fc, arch, getattr(cfg.codec, arch))
        codecs[fc], symbols[fc] = PairCodec(enc, dec), code_length(fc, numel)
        linear[fc] = linear_code(shape, fc, device)
    t1 = time.perf_counter()
    parts = ComputeParts.measure(pipe, shape, steps, guidance)
    components = {
        "codec_encode": {fc: codec_encode_gflops(c, shape) for fc, c in codecs.items()},
        "codec_decode": {fc: codec_decode_gflops(c, c.k) for fc, c in codecs.items()},
        "linear_encode": {fc: linear_encode_gflops(c, shape) for fc, c in linear.items()},
        "linear_decode": {fc: linear_decode_gflops(c, c.k) for fc, c in linear.items()},
        "digital_decode": {fc: ldpc_decode_gflops(n) for fc, n in symbols.items()}}
    t_measure = time.perf_counter() - t1

    print(f"## {name}: latent {'x'.join(map(str, shape))} (|z| = {numel}), {steps} DDIM steps, "
          f"guidance {guidance:g}, codec arch {arch}")
    print(f"(load {t_load:.1f} s, measure {t_measure:.1f} s)")
    if device.type == "meta":
        same = all(math.isclose(components[side][fc], linear_code_gflops(symbols[fc], numel))
                   for side in ("linear_encode", "linear_decode") for fc in args.fcs)
        print("(linear code: a LinearCode of the exact shapes on the meta device, KLT basis not "
              "fitted: its cost is the closed form 2 k |z| per side (linear_code_gflops)"
              f"{'' if same else ' -- MISMATCH with the closed form'})")
    print("\n| component | GFLOPs per image |\n|---|---:|")
    lines = parts.format().splitlines() + [
        f"{key + f' fc={fc:g}':<22}{v:.6g}" for key, table in components.items()
        for fc, v in sorted(table.items())]
    for line in lines:
        label, value = line[:22].strip(), line[22:].split()[0]
        print(f"| {label} | {float(value):.6g} |")
    print("\n| scheme | fc | symbols | UE U-Net evals | UE GFLOPs | ES GFLOPs |")
    print("|---|---:|---:|---:|---:|---:|")
    decode_image = functools.partial(decode_latents, pipe.vae)  # never called: costs only
    # the quantiser's KLT is fitted on a few Gaussian latents: the digital rows' cost is the LDPC
    # decoder's, which depends on the symbol budget only
    z_train = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    quantizer = LatentQuantizer(z_train)

    def dm(base):
        return DiffusionReceiver(base, lambda: pipe, z_train[:1], ue_steps=cfg.eval.ue_steps,
                                 es_steps=steps, guidance_scale=guidance)

    f = vae_scale_factor(pipe.vae)
    feature = FeatureLatentScheme(decode_image)
    rows = [("centralized", None, 3 * shape[1] * f * shape[2] * f, CentralizedScheme()),
            ("feature", None, numel, feature)]
    for fc in args.fcs:
        rows += [
            ("meg", fc, symbols[fc],
             LatentScheme(decode_image, codecs[fc], fc=fc, latent_shape=shape)),
            ("linear", fc, symbols[fc], LinearScheme(linear[fc], decode_image, fc=fc)),
            ("digital", fc, symbols[fc],
             LatentDigitalScheme(z_train, decode_image, symbols[fc], fc=fc, quantizer=quantizer)),
            ("digital-image", fc, symbols[fc], DigitalImageScheme(symbols[fc], fc=fc))]
    fc0 = args.fcs[0]
    rows += [("feature+dm", None, numel, dm(feature)),
             ("meg+dm", fc0, symbols[fc0],
              dm(LatentScheme(decode_image, codecs[fc0], fc=fc0, latent_shape=shape)))]
    rows += [("prompt", None, None, PromptScheme(symbols[fc0], es_steps=steps,
                                                 guidance_scale=guidance))]
    for scheme, fc, sym, instance in rows:
        c = scheme_compute(instance, parts,
                           ue_steps_run=args.dm_steps if scheme.endswith("+dm") else 0.0)
        print(f"| {scheme} | {'' if fc is None else f'{fc:g}'} | {'' if sym is None else sym} | "
              f"{c.ue_unet_evals:g} | {c.ue_gflops:.6g} | {c.es_gflops:.6g} |")


if __name__ == "__main__":
    main()
