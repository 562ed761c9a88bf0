"""Measure the fading MCS thresholds of the ``digital`` scheme (``FADING_THRESHOLDS_DB`` in
``src/meg_lightning/schemes/ldpc.py``): for every MCS, the smallest average SNR at which the 5G
LDPC + QAM link's codeword error rate on Rayleigh block fading is <= 10%.

    python benchmarks/digital_fading_thresholds.py 32 64 96 --blocks 1     # ~4 min per budget

Each budget is a number of QAM symbols per image (the mini model's fc 0.25 / 0.5 / 0.75 are
32 / 64 / 96); ``--blocks`` the Rayleigh fading blocks per image (``channel.num_blocks``). It runs
:func:`~meg_lightning.schemes.ldpc.measure_threshold_db` on the channel (bisection on a
``FADING_RESOLUTION_DB`` grid, ``FADING_CODEWORDS`` codewords per point, the same bits, gains and
noise at every point, seed 0) and prints the lines to paste into the table.
"""

from __future__ import annotations

import argparse
import time

import torch

from meg_lightning.channels import make as make_channel
from meg_lightning.schemes.ldpc import (
    FADING_CODEWORDS,
    FADING_RESOLUTION_DB,
    MCS_TABLE,
    measure_threshold_db,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("budgets", type=int, nargs="+", help="QAM symbols per image")
    p.add_argument("--blocks", type=int, nargs="+", default=[1], help="Rayleigh blocks per image")
    p.add_argument("--kind", default="rayleigh", help="the fading channel model (channel.kind)")
    p.add_argument("--num-iter", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for blocks in args.blocks:
        channel = make_channel(args.kind, snr_db=0.0, num_blocks=blocks)
        for n in args.budgets:
            row = []
            for m in MCS_TABLE:
                t0 = time.perf_counter()
                t = measure_threshold_db(n, m, num_iter=args.num_iter, channel=channel,
                                         num_codewords=FADING_CODEWORDS,
                                         resolution_db=FADING_RESOLUTION_DB)
                row.append(t)
                print(f"{args.kind} blocks {blocks} n_complex {n:5d}  {m.name:10s}  {t}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            groups = channel.groups(n)
            vals = ", ".join("None" if t is None else f"{t:.1f}" for t in row)
            print(f"    ({args.kind!r}, {groups}, {n}): ({vals}),", flush=True)


if __name__ == "__main__":
    main()
