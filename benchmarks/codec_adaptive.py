"""The acceptance table of the SNR-adaptive codecs (docs/CODECS.md): against the optimal linear
code and the Gaussian OPTA bound, on captions neither the mini model nor the codecs saw.

    python benchmarks/codec_adaptive.py [bench.source=pretrained|runs] [bench.dir=data/codec-mini]
        [bench.runs={bench.dir}/runs] [bench.fcs=0.25,0.5,0.75] [bench.blocks=4] [bench.repeats=4]
        [bench.test=heldout|seen|test] [bench.out=docs/codec_adaptive.json]

Data: the caches of ``make pretrained-codecs`` under ``bench.dir`` (codec.pretrained): the linear
code and the OPTA spectrum are fitted on the training split of the training cache (the latents the
codecs trained on); the test latents are all 360 of the held-out cache (4 seeds x the 90 captions
mini never trained on); ``bench.test=seen``: the validation and test splits of the training cache
instead (486 latents: the training captions with noise seeds the codecs never saw);
``bench.test=test``: its test split alone (162 latents: the recipe's "test split", which unlike
the validation split played no part in choosing the best checkpoint). Codecs: the ones shipped in
the package (``bench.source=pretrained``) or the best checkpoints of the recipe's runs (``runs``).

For each fc, codec and ``LinearCode`` see the same channel draws (one generator seed per cell:
same fading gains and the same standard-normal noise, which the channel scales to the SNR). The
linear code is sent twice: with each seed normalised to unit power, the constraint every learned
scheme's channel imposes (``linear_seed_mse``), and under the looser average-power constraint its
closed form assumes (``linear_mse``, ``normalize=False``: a seed's power varies with its latent). On
AWGN and on Rayleigh block fading with ``bench.blocks`` blocks, zero forcing and perfect CSI,
at -10 / 0 / 10 / 20 dB, ``bench.repeats`` draws per test latent. ``codec_mse_se``: the standard
error of the codec's MSE over the test latents (each latent's error averaged over its draws),
which gives the 95% interval of the OPTA gap in the table. Prints a Markdown table and writes the
numbers as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch

from meg_lightning import recipe
from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import LinearCode, load_codec, opta_mse, pretrained
from meg_lightning.compose import load_config
from meg_lightning.data import build_datamodule
from meg_lightning.evaluation.inputs import latent_spectrum

SNRS = (-10.0, 0.0, 10.0, 20.0)


def latents(cfg, splits: tuple[str, ...]) -> torch.Tensor:
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return torch.cat([torch.stack([d[i]["z"] for i in range(len(d))])
                      for d in (dm.dataset(s) for s in splits)])


#: the test sets: name -> (which of the recipe's caches, its splits)
TESTS = {"heldout": ("heldout", ("train", "val", "test")), "seen": ("train", ("val", "test")),
         "test": ("train", ("test",))}


def test_latents(out: Path, name: str) -> torch.Tensor:
    """The latents of test set ``name`` (:data:`TESTS`) of the recipe's caches under ``out``."""
    cache, splits = TESTS[name]
    return latents(load_config(recipe.data_overrides(out, cache)), splits)


def cell_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def per_latent_mse(scheme, z: torch.Tensor, snr_db: float, repeats: int, seed: int
                   ) -> torch.Tensor:
    """(N,) each of the N latents' MSE through ``scheme`` (its own channel) averaged over
    ``repeats`` draws; all draws come from one generator seeded with ``seed`` (no gradient)."""
    zz = z.repeat(repeats, 1, 1, 1)
    with torch.no_grad():
        z_hat = scheme(zz, snr_db=snr_db, generator=torch.Generator().manual_seed(seed))["z_hat"]
    return (z_hat - zz).pow(2).flatten(1).mean(1).view(repeats, -1).mean(0)


def gap_db(mse: float, opta: float) -> float:
    """The gap of ``mse`` to the OPTA bound in dB (negative: below it)."""
    return 10 * math.log10(mse / opta)


def gap_interval(row: dict) -> tuple[float, float]:
    """95% interval (dB) of the codec's gap to OPTA: MSE +- 1.96 standard errors. A lower end at
    or below zero MSE (a few heavy-tailed test latents) gives -inf rather than a math error."""
    ends = [row["codec_mse"] + d * 1.96 * row["codec_mse_se"] for d in (-1, 1)]
    lo, hi = (gap_db(e, row["opta_awgn_mse"]) if e > 0 else -math.inf for e in ends)
    return lo, hi


def main(argv: list[str]) -> list[dict]:
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("bench.")}
    test = own.get("bench.test", "heldout")
    if test not in TESTS:
        print(f"codec_adaptive: bench.test={test!r}: expected one of {', '.join(TESTS)}",
              file=sys.stderr)
        raise SystemExit(2)
    out = Path(own.get("bench.dir", recipe.RECIPE_DIR))
    fcs = [float(v) for v in own.get("bench.fcs", "0.25,0.5,0.75").split(",")]
    blocks, repeats = int(own.get("bench.blocks", "4")), int(own.get("bench.repeats", "4"))
    z_train = latents(load_config(recipe.data_overrides(out, "train")), ("train",))
    z_test = test_latents(out, test)
    spectrum = latent_spectrum(z_train)
    rows = []
    for fc in fcs:
        if own.get("bench.source", "pretrained") == "pretrained":
            codec = pretrained.load_pretrained("mini", fc, tuple(z_train.shape[1:]))
        else:
            runs = Path(own.get("bench.runs", out / "runs"))
            codec = load_codec(runs / "codec-adaptive" / f"fc{fc:g}" / "best.ckpt")
        linear = LinearCode.fit(z_train, fc)
        for kind in ("awgn", "rayleigh"):
            nb = blocks if kind == "rayleigh" else 1
            for snr in SNRS:
                seed = cell_seed(fc, kind, snr)
                codec.channel = make_channel(kind, snr_db=snr, num_blocks=nb, equalizer="zf")
                per_latent = per_latent_mse(codec, z_test, snr, repeats, seed)
                lin = {}
                for name, normalize in (("linear_mse", False), ("linear_seed_mse", True)):
                    linear.channel = make_channel(kind, snr_db=snr, num_blocks=nb,
                                                  equalizer="zf", normalize=normalize)
                    lin[name] = float(per_latent_mse(linear, z_test, snr, repeats, seed).mean())
                rows.append(dict(fc=fc, test=test, channel=kind, blocks=nb, snr_db=snr,
                                 codec_mse=float(per_latent.mean()),
                                 codec_mse_se=float(per_latent.std() / math.sqrt(len(per_latent))),
                                 **lin,
                                 opta_awgn_mse=float(opta_mse(spectrum, codec.k / z_test[0].numel(),
                                                              snr)),
                                 n_test=len(z_test), repeats=repeats,
                                 n_train=len(z_train)))
                print(rows[-1], flush=True)
    print("\n| fc | channel | SNR (dB) | meg-adaptive | linear (per-seed power) | adaptive / linear "
          "| linear (average power) | adaptive / linear (average power) | OPTA (AWGN) "
          "| adaptive vs OPTA (dB) | 95% interval (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gap = gap_db(r["codec_mse"], r["opta_awgn_mse"])
        lo, hi = gap_interval(r)
        print(f"| {r['fc']:g} | {r['channel']}{'' if r['blocks'] == 1 else ' B=' + str(r['blocks'])} "
              f"| {r['snr_db']:g} | {r['codec_mse']:.4f} | {r['linear_seed_mse']:.4f} | "
              f"{r['codec_mse'] / r['linear_seed_mse']:.3f} | {r['linear_mse']:.4f} | "
              f"{r['codec_mse'] / r['linear_mse']:.3f} | {r['opta_awgn_mse']:.4f} | "
              f"{gap:+.2f}{'' if r['channel'] == 'awgn' else ' (vs AWGN bound)'} "
              f"| {lo:+.2f} .. {hi:+.2f} |")
    if own.get("bench.out"):
        Path(own["bench.out"]).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
