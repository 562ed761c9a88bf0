"""How the cost of a frame of `meg eval-multiuser` grows with K, the users per frame.

    python benchmarks/multiuser_k.py [--scheme linear] [--images 16] [--ks 1 2 4 8 16]
        [--rounds 3] [--model mini] [--cache data/demo/latents] [--num-prompts 512]

Runs the sweep (:func:`meg_lightning.multiuser.sweep.run_multiuser`) on the demo's mini latents
for one scheme at fc 0.5, AWGN 10 dB, TDMA with equal shares, ``--images`` test images per user,
and reads each user's ``time_s`` from its row: a frame's cost is the sum over its K users (the
set-up before the first frame, decoding I_0 once and loading the codecs, is not in it). Each K's
time is the median over ``--rounds`` runs; the growth is the least-squares exponent a of
``t = c K^a`` over the swept K (a = 1: linear in K).

It also times, inside the frames, the part of a user that batching the K users of a frame into
one scheme call could merge, the scheme's transmission (encoder, channel, decoder to z_hat), and
the VAE decoding of the UE's images, which is convolution work per image whatever the batching
(the rest: FID features, the judge, building the scheme), and the VAE decoding per image of
16 users' images in one call against 16 calls of one user's (what stacking the users' latents
would change of that part). Prints the machine and a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch

from meg_lightning.bench import machine
from meg_lightning.cli import compose_for
import meg_lightning.multiuser.sweep as sweep
from meg_lightning.schemes import LatentTransmission, SchemeOutput


def rows_latent_shape(cfg) -> tuple[int, ...]:
    """The latent shape of the cache the sweep read (C, h, w)."""
    from meg_lightning.data import build_datamodule  # noqa: PLC0415

    return tuple(build_datamodule(cfg).latent_shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scheme", default="linear")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="mini")
    ap.add_argument("--cache", default="data/demo/latents")
    ap.add_argument("--num-prompts", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    # Time, inside the frames, the scheme's transmission (what one batched call over K users
    # could merge) and the VAE decoding of the UE's images: wrappers with the same outputs
    spent = {"transmit": 0.0, "decode": 0.0, "in_frame": False}
    inner_call, inner_frame, inner_decoder = (LatentTransmission.__call__, sweep._frame,
                                              sweep.image_decoder)

    def timed_call(self, z, i_0, **kw):
        t0 = time.perf_counter()
        z_hat, symbols = self.transmit(z, channel=kw["channel"], generator=kw["generator"])
        spent["transmit"] += time.perf_counter() - t0
        return SchemeOutput(images=self.decode_image(z_hat), symbols=symbols, z_hat=z_hat)

    def timed_frame(*a, **kw):
        spent["in_frame"] = True
        try:
            return inner_frame(*a, **kw)
        finally:
            spent["in_frame"] = False

    def timed_decoder(*a, **kw):
        decode = inner_decoder(*a, **kw)

        def run(z):
            t0 = time.perf_counter()
            out = decode(z)
            if spent["in_frame"]:
                spent["decode"] += time.perf_counter() - t0
            return out

        return run

    LatentTransmission.__call__, sweep._frame, sweep.image_decoder = (timed_call, timed_frame,
                                                                      timed_decoder)

    per_k: dict[int, list[float]] = {k: [] for k in args.ks}
    share: list[float] = []
    decode: list[float] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as out:
            cfg = compose_for("eval-multiuser", [
                f"model={args.model}", f"data.num_prompts={args.num_prompts}",
                "data.test_fraction=0.25", f"data.cache_dir={args.cache}", f"out_dir={out}",
                "logger=none", f"eval.schemes=[{args.scheme}]", "eval.fcs=[0.5]",
                "eval.snrs_db=[10]", "eval.channels=[awgn]", f"eval.num_images={args.images}",
                "eval.pretrained=true", "channel.num_blocks=1",
                f"users.ks=[{','.join(map(str, args.ks))}]", "users.accesses=[tdma]"])
            spent["transmit"] = spent["decode"] = 0.0
            rows, _ = sweep.run_multiuser(cfg, progress=False)
        for k in args.ks:
            per_k[k].append(sum(row["time_s"] for row in rows if row["k"] == k))
        total = sum(row["time_s"] for row in rows)
        share.append(spent["transmit"] / total)
        decode.append(spent["decode"] / total)
        print(f"round {r + 1}: " + ", ".join(f"K={k} {per_k[k][-1]:.2f} s" for k in args.ks),
              flush=True)
    LatentTransmission.__call__, sweep._frame, sweep.image_decoder = (inner_call, inner_frame,
                                                                      inner_decoder)

    # The VAE's time per image: one call over K = 16 users' images against one call per user
    from meg_lightning.evaluation.inputs import image_decoder  # noqa: PLC0415

    decode_one = image_decoder(cfg, torch.device("cpu"))
    z = torch.randn(16 * args.images, *rows_latent_shape(cfg))
    per_user_s, stacked_s = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for u in range(16):
            decode_one(z[u * args.images:(u + 1) * args.images])
        per_user_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_one(z)
        stacked_s.append(time.perf_counter() - t0)

    t = {k: statistics.median(v) for k, v in per_k.items()}
    xs, ys = [math.log(k) for k in args.ks], [math.log(t[k]) for k in args.ks]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    print(f"\n{machine()}; {args.model}, {args.scheme} fc 0.5, AWGN 10 dB, TDMA, "
          f"{args.images} images per user, median of {args.rounds} rounds\n")
    print("| K | frame (s) | per user (s) | frame / K=1 |")
    print("|---|---|---|---|")
    for k in args.ks:
        print(f"| {k} | {t[k]:.3f} | {t[k] / k:.3f} | {t[k] / t[args.ks[0]]:.2f} |")
    print(f"\ngrowth: t ~ K^{slope:.2f} (least squares over K = {args.ks}); of the frames' "
          f"time the scheme's transmission is {100 * statistics.median(share):.1f}% (the most a "
          f"batched call over the K users could save), the VAE decoding of the UE's images "
          f"{100 * statistics.median(decode):.1f}%")
    a, b = statistics.median(per_user_s), statistics.median(stacked_s)
    print(f"VAE decoding of 16 users x {args.images} images: {a:.2f} s in 16 calls, {b:.2f} s in "
          f"one (ratio {a / b:.2f})")


if __name__ == "__main__":
    main()
