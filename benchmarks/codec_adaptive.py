"""Adaptive codec vs the optimal linear code and the Gaussian OPTA bound on the test latents.

    python benchmarks/codec_adaptive.py model=mini data.cache_dir=... out_dir=... \
        [bench.fcs=0.25,0.5,0.75] [bench.blocks=4] [bench.out=docs/codec_adaptive.json]

For each fc, the codec ``{out_dir}/codec/fc{fc}/best.ckpt`` and ``codec.LinearCode`` (fitted on
the training latents) see the same channel draws (one generator seed per cell: same fading gains
and the same standard-normal noise, which the channel scales to the SNR), on AWGN and on Rayleigh
block fading with ``bench.blocks`` blocks and perfect CSI, at -10 / 0 / 10 / 20 dB. OPTA is the
AWGN bound (codec.opta_mse) for the training latents' spectrum. Prints a Markdown table and
writes the numbers as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from meg_lightning.channel import Channel
from meg_lightning.codec import LinearCode, opta_mse
from meg_lightning.codec.train import load_trained_codec
from meg_lightning.config import load_config
from meg_lightning.data import build_datamodule
from meg_lightning.evaluation.sweep import latent_spectrum, train_latents

SNRS = (-10.0, 0.0, 10.0, 20.0)
REPEATS = 4  # channel draws per test latent


def main(argv: list[str]) -> None:
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("bench.")}
    cfg = load_config([a for a in argv if not a.startswith("bench.")])
    fcs = [float(v) for v in own.get("bench.fcs", "0.25,0.5,0.75").split(",")]
    blocks = int(own.get("bench.blocks", "4"))
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    z_train = train_latents(dm)
    ds = dm.dataset("test")
    z_test = torch.stack([ds[i]["z"] for i in range(len(ds))]).repeat(REPEATS, 1, 1, 1)
    spectrum = latent_spectrum(z_train)
    rows = []
    for fc in fcs:
        codec = load_trained_codec(cfg, fc, latent_shape=tuple(z_train.shape[1:]))
        linear = LinearCode.fit(z_train, fc)
        ratio = codec.k / z_train[0].numel()
        for kind in ("awgn", "rayleigh"):
            nb = blocks if kind == "rayleigh" else 1
            for snr in SNRS:
                seed = hash((fc, kind, snr)) & 0xFFFF
                with torch.no_grad():
                    codec.channel = Channel(kind=kind, snr_db=snr, num_blocks=nb,
                                            equalizer="zf")
                    g = torch.Generator().manual_seed(seed)
                    z_hat = codec(z_test, snr_db=snr, generator=g)["z_hat"]
                    linear.channel = Channel(kind=kind, snr_db=snr, num_blocks=nb,
                                             equalizer="zf", normalize=False)
                    g = torch.Generator().manual_seed(seed)
                    z_lin = linear(z_test, snr_db=snr, generator=g)["z_hat"]
                mse = float((z_hat - z_test).pow(2).mean())
                mse_lin = float((z_lin - z_test).pow(2).mean())
                rows.append(dict(fc=fc, channel=kind, blocks=nb, snr_db=snr, codec_mse=mse,
                                 linear_mse=mse_lin, opta_awgn_mse=float(opta_mse(spectrum, ratio, snr)),
                                 n_test=len(ds), repeats=REPEATS))
                print(rows[-1], flush=True)
    print("\n| fc | channel | SNR (dB) | adaptive | linear | OPTA (AWGN) | adaptive vs OPTA (dB) |")
    print("|---|---|---|---|---|---|---|")
    import math

    for r in rows:
        gap = 10 * math.log10(r["codec_mse"] / r["opta_awgn_mse"])
        print(f"| {r['fc']:g} | {r['channel']}{'' if r['blocks'] == 1 else ' B=' + str(r['blocks'])} "
              f"| {r['snr_db']:g} | {r['codec_mse']:.4f} | {r['linear_mse']:.4f} | "
              f"{r['opta_awgn_mse']:.4f} | {gap:+.2f} |")
    out = own.get("bench.out")
    if out:
        Path(out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
