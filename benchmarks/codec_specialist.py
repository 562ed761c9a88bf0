"""What serving every SNR with one model costs (docs/CODECS.md, sessions 8-11): a copy of an
SNR-adaptive codec is fine-tuned at one fixed SNR on AWGN (a "specialist"), and its latent MSE is
compared with the codec's own, with the optimal linear code's and with the Gaussian OPTA bound,
on captions neither mini nor the codecs saw and on unseen seeds of the training captions.

    python benchmarks/codec_specialist.py [bench.source=pretrained|runs] [bench.dir=data/codec-mini]
        [bench.runs={bench.dir}/runs] [bench.fc=0.75] [bench.snr_db=0] [bench.train=decoder|codec]
        [bench.steps=3000] [bench.batch=128] [bench.lr=1e-3] [bench.repeats=2] [bench.seed=0]
        [bench.threads=1] [bench.out=FILE.json]

Data and codecs as in ``benchmarks/codec_adaptive.py`` (the caches of ``make pretrained-codecs``).
``bench.train``: ``decoder`` fine-tunes the decoder only (the encoder, hence the seed, stays
the codec's); ``codec`` fine-tunes both. Adam, cosine learning rate from ``bench.lr``, batches of
``bench.batch`` training latents, plain latent MSE (at one SNR it is proportional to the recipe's
loss relative to the linear code). The gap between the specialist and the codec is the price of
one model for all SNRs at that SNR, with this architecture and these captions; a specialist that
still misses the OPTA line says the architecture or the data, not the SNR range, is the limit.
Prints one line per evaluation and a Markdown table; ``bench.out`` writes the rows as JSON.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from meg_lightning import recipe
from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import LinearCode, load_codec, opta_mse, pretrained
from meg_lightning.compose import load_config
from meg_lightning.evaluation.inputs import latent_spectrum
from meg_lightning.io import atomic_write_json

KEYS = {"bench.source": "pretrained", "bench.dir": None, "bench.runs": None, "bench.fc": "0.75",
        "bench.snr_db": "0", "bench.train": "decoder", "bench.steps": "3000",
        "bench.batch": "128", "bench.lr": "1e-3", "bench.repeats": "2", "bench.seed": "0",
        "bench.threads": "1", "bench.out": None}
TRAIN = ("decoder", "codec")


def parse(argv: list[str]) -> dict:
    """``bench.key=value`` arguments over :data:`KEYS`' defaults; SystemExit(2) with one line
    naming the key, the value and what was expected on anything else (before any work)."""
    def fail(key: str, value: str, expected: str) -> None:
        print(f"codec_specialist: {key}={value!r}: expected {expected}", file=sys.stderr)
        raise SystemExit(2)

    own = {k: v for k, v in KEYS.items()}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            fail(key, value, "a key=value argument with one of the keys " + ", ".join(KEYS))
        own[key] = value
    checks = {"bench.fc": (float, lambda v: 0 < v <= 1, "a rate in (0, 1]"),
              "bench.snr_db": (float, math.isfinite, "a finite SNR in dB"),
              "bench.steps": (int, lambda v: v >= 1, "an integer >= 1"),
              "bench.batch": (int, lambda v: v >= 1, "an integer >= 1"),
              "bench.lr": (float, lambda v: v > 0, "a learning rate > 0"),
              "bench.repeats": (int, lambda v: v >= 1, "an integer >= 1"),
              "bench.seed": (int, lambda v: True, "an integer"),
              "bench.threads": (int, lambda v: v >= 1, "an integer >= 1")}
    for key, (cast, ok, expected) in checks.items():
        try:
            value = cast(own[key])
        except ValueError:
            value = None
        if value is None or not ok(value):
            fail(key, own[key], expected)
        own[key] = value
    if own["bench.source"] not in ("pretrained", "runs"):
        fail("bench.source", own["bench.source"], "pretrained or runs")
    if own["bench.train"] not in TRAIN:
        fail("bench.train", own["bench.train"], " or ".join(TRAIN))
    return own


def specialise(codec, z_train: torch.Tensor, snr_db: float, train: str = "decoder",
               steps: int = 3000, batch: int = 128, lr: float = 1e-3, seed: int = 0,
               every: int = 0, report: Optional[Callable[[int, object], None]] = None):
    """A copy of ``codec`` fine-tuned on AWGN at ``snr_db`` (``codec`` itself is not changed):
    ``train`` "decoder" (encoder frozen) or "codec" (both); Adam with a cosine learning rate from
    ``lr``; ``batch`` latents drawn from ``z_train`` per step. ``report(step, model)`` is called
    every ``every`` steps and after the last one (``every`` 0: never). Returns the copy in eval
    mode."""
    if train not in TRAIN:
        raise ValueError(f"train must be one of {TRAIN}, got {train!r}")
    model = copy.deepcopy(codec).train()
    model.channel = make_channel("awgn", snr_db=snr_db)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.decoder.parameters())
    if train == "codec":
        params += list(model.encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        z = z_train[torch.randint(len(z_train), (batch,), generator=g)]
        loss = (model(z, snr_db=snr_db, generator=g)["z_hat"] - z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if report is not None and every and (step % every == 0 or step == steps):
            model.eval()
            report(step, model)
            model.train()
    return model.eval()


def main(argv: list[str]) -> list[dict]:
    own = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # a sibling script, importable once its folder is on sys.path
    from codec_adaptive import (gap_db, gap_interval, latents,  # noqa: PLC0415
                                per_latent_mse, test_latents)

    torch.set_num_threads(own["bench.threads"])
    out = Path(own["bench.dir"] or recipe.RECIPE_DIR)
    fc, snr = own["bench.fc"], own["bench.snr_db"]
    repeats, seed = own["bench.repeats"], own["bench.seed"]
    z_train = latents(load_config(recipe.data_overrides(out, "train")), ("train",))
    tests = {name: test_latents(out, name) for name in ("heldout", "seen")}
    if own["bench.source"] == "pretrained":
        codec = pretrained.load_pretrained("mini", fc, tuple(z_train.shape[1:]))
    else:
        runs = Path(own["bench.runs"] or out / "runs")
        codec = load_codec(runs / "codec-adaptive" / f"fc{fc:g}" / "best.ckpt").eval()
    codec.channel = make_channel("awgn", snr_db=snr)
    opta = float(opta_mse(latent_spectrum(z_train), codec.k / z_train[0].numel(), snr))
    linear = LinearCode.fit(z_train, fc)
    linear.channel = make_channel("awgn", snr_db=snr, normalize=True)  # per-seed power
    lin = {name: float(per_latent_mse(linear, z, snr, repeats, seed + 1).mean())
           for name, z in tests.items()}

    rows, t0 = [], time.time()

    def measure(step: int, model) -> None:
        for name, z in tests.items():
            per = per_latent_mse(model, z, snr, repeats, seed + 1)
            row = dict(fc=fc, snr_db=snr, train=own["bench.train"], step=step, test=name,
                       codec_mse=float(per.mean()),
                       codec_mse_se=float(per.std() / math.sqrt(len(per))),
                       linear_seed_mse=lin[name], opta_awgn_mse=opta, n_test=len(z),
                       seconds=round(time.time() - t0, 1))
            rows.append(row)
            print(f"step {step} {name}: MSE {row['codec_mse']:.4f}, "
                  f"{gap_db(row['codec_mse'], opta):+.2f} dB vs OPTA, "
                  f"{row['codec_mse'] / row['linear_seed_mse']:.3f}x linear "
                  f"({row['seconds']:.0f} s)", flush=True)

    measure(0, codec)
    steps = own["bench.steps"]
    specialise(codec, z_train, snr, own["bench.train"], steps, own["bench.batch"],
               own["bench.lr"], seed, every=max(1, steps // 5), report=measure)
    print(f"\nfc {fc:g}, AWGN {snr:g} dB, specialist: {own['bench.train']}, {steps} steps "
          f"(OPTA {opta:.4f})\n")
    print("| test captions | step | latent MSE | vs OPTA (dB) | 95% interval (dB) | / linear |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["step"] in (0, steps):
            lo, hi = gap_interval(r)
            print(f"| {r['test']} | {r['step']} | {r['codec_mse']:.4f} | "
                  f"{gap_db(r['codec_mse'], opta):+.2f} | {lo:+.2f} .. {hi:+.2f} | "
                  f"{r['codec_mse'] / r['linear_seed_mse']:.3f} |")
    if own["bench.out"]:
        atomic_write_json(Path(own["bench.out"]), rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
