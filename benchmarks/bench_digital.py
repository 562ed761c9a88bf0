"""The latent digital baselines (Sionna 5G LDPC + QAM, and its capacity ideal) on synthetic latents.

1. Seconds per batch of 128 latents (4x8x8 = 256 entries, the mini model's shape) at fc 0.5
   (128 real symbols = 64 QAM symbols per image): quantise + LDPC encode + map + channel + demap
   + decode + dequantise, per MCS (forced) and with the automatic choice, AWGN and Rayleigh.
2. Codeword error rate and latent MSE against the SNR for both schemes (automatic MCS), AWGN and
   Rayleigh block fading (4 blocks), on Gaussian latents with a decaying spectrum.

    python benchmarks/bench_digital.py                          # 1. and 2. (~2-4 min on 1 core)
    python benchmarks/bench_digital.py --thresholds 32 64 96    # measure MEASURED_THRESHOLDS_DB

``--thresholds N ...`` runs :func:`measure_threshold_db` for every MCS at N QAM symbols per image
and prints the table entries (the mini budgets fc 0.25 / 0.5 / 0.75 are 32 / 64 / 96).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from meg_lightning.bench import cpu_model
from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import code_length
from meg_lightning.schemes.digital import CapacityDigitalScheme, LatentDigitalScheme
from meg_lightning.schemes.ldpc import MCS_TABLE, measure_threshold_db
from meg_lightning.schemes.quantizer import LatentQuantizer

#: fading blocks of the Rayleigh channel (AWGN has one)
BLOCKS = 4


def synthetic_latents(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 4, 8, 8) Gaussian latents whose KLT variances decay like exp(-i / 20), in a fixed
    random basis (the same for every seed: ``seed`` only changes the samples)."""
    basis = torch.randn(256, 256, generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
    q, _ = torch.linalg.qr(basis)
    g = torch.Generator().manual_seed(seed)
    lam = torch.exp(-torch.arange(256, dtype=torch.float64) / 20.0)
    x = torch.randn(n, 256, generator=g, dtype=torch.float64) * lam.sqrt()
    return (x @ q.T).float().reshape(n, 4, 8, 8)


def link(kind: str, snr_db: float):
    """The cell's channel: AWGN, or Rayleigh block fading with :data:`BLOCKS` blocks."""
    return make_channel(kind, snr_db=snr_db, num_blocks=BLOCKS if kind == "rayleigh" else 1)


def thresholds(budgets: list[int], num_iter: int) -> None:
    for n in budgets:
        row = []
        for m in MCS_TABLE:
            t0 = time.perf_counter()
            t = measure_threshold_db(n, m, num_iter=num_iter)
            row.append(t)
            print(f"n_complex {n:5d}  {m.name:10s}  {t}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"    {n}: ({', '.join('None' if t is None else f'{t:.1f}' for t in row)}),", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--thresholds", type=int, nargs="*", default=None,
                   help="measure the MCS thresholds for these numbers of QAM symbols per image")
    p.add_argument("--num-iter", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.thresholds is not None:
        thresholds(args.thresholds, args.num_iter)
        return

    print(f"CPU: {cpu_model()}, torch threads {torch.get_num_threads()}")
    z_train, z = synthetic_latents(2000, seed=0), synthetic_latents(args.batch, seed=1)
    symbols = code_length(0.5, 256)
    q = LatentQuantizer(z_train)
    ident = lambda zz: zz  # no image decoder: the latent is the output
    print(f"\n## seconds per batch of {args.batch} (fc 0.5: {symbols} real symbols per image)\n")
    print("| MCS | kind | info bits | s / batch (median of rounds) |")
    print("|---|---|---|---|")
    for m in (0, 4, 9, None):
        for kind in ("awgn", "rayleigh"):
            s = LatentDigitalScheme(z_train, ident, symbols, fc=0.5, mcs=m, quantizer=q,
                                    num_iter=args.num_iter)
            channel = link(kind, 10.0)
            gen = torch.Generator().manual_seed(0)
            s(z, None, channel=channel, generator=gen)  # warm-up (builds the codes)
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                out = s(z, None, channel=channel, generator=gen)
                times.append(time.perf_counter() - t0)
            name = "auto (10 dB)" if m is None else MCS_TABLE[m].name
            print(f"| {name} | {kind} | {int(out.info['payload_bits'][0])} | "
                  f"{statistics.median(times):.2f} |", flush=True)

    print(f"\n## codeword error rate and latent MSE, fc 0.5, {args.batch} latents, mean variance "
          f"{z.var(0).mean():.3f}\n")
    print("| kind | SNR dB | MCS | info bits | BLER | success | latent MSE | capacity bits "
          "| capacity MSE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("awgn", "rayleigh"):
        dig = LatentDigitalScheme(z_train, ident, symbols, fc=0.5, quantizer=q,
                                  num_iter=args.num_iter)
        cap = CapacityDigitalScheme(z_train, ident, symbols, fc=0.5, quantizer=q)
        for snr in (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0):
            channel = link(kind, snr)
            o = dig(z, None, channel=channel, generator=torch.Generator().manual_seed(1))
            c = cap(z, None, channel=channel, generator=torch.Generator().manual_seed(1))
            mse = (o.z_hat - z).pow(2).mean().item()
            cmse = (c.z_hat - z).pow(2).mean().item()
            print(f"| {kind} | {snr:g} | {MCS_TABLE[int(o.info['mcs'][0])].name} | "
                  f"{int(o.info['payload_bits'][0])} | {o.info['bler'].mean():.3f} | "
                  f"{o.info['success'].mean():.3f} | {mse:.4f} | "
                  f"{int(c.info['payload_bits'][0])} | {cmse:.4f} |", flush=True)


if __name__ == "__main__":
    main()
