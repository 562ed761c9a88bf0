"""A fixed evaluation on the tiny preset whose numbers must not move: every scheme, AWGN,
Rayleigh block fading and the noiseless channel, two rates, two SNRs, with codecs trained here
for one epoch. ``tests/data/golden_tiny_eval.csv`` was written before the link layer was
refactored; a change that moves any metric column fails this test. A deliberate change of the
numbers regenerates the file in its own commit that says why."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from meg_lightning.cli import run

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_tiny_eval.csv"
#: bookkeeping, not numbers: a path-and-mtime fingerprint, a hash of the settings, wall time
NOT_COMPARED = {"codec_id", "config_hash", "time_s"}
SCHEMES = ("[centralized,feature,feature+dm,meg,meg+dm,meg-adaptive,meg-adaptive+dm,linear,"
           "linear+dm,digital,digital+dm,capacity,capacity+dm,digital-image,prompt]")


def _run(out: Path) -> Path:
    common = ["model=tiny", "seed=0", f"out_dir={out}/runs", f"data.cache_dir={out}/latents",
              "data.num_prompts=40", "data.test_fraction=0.2", "data.val_fraction=0.1",
              "logger=none", "generation.device=cpu"]
    quiet = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false"]
    assert run(["latents", *common]) == 0
    for fc in ("0.25", "0.5"):
        assert run(["train-codec", *common, f"codec.fc={fc}", *quiet]) == 0
        assert run(["train-codec", *common, f"codec.fc={fc}", "codec.arch=adaptive",
                    "codec.adaptive.width=8", "codec.adaptive.blocks=1", "channel.kind=rayleigh",
                    "channel.num_blocks=2", "channel.train_snr_db=[-5,15]",
                    "codec.awgn_fraction=0.5", *quiet]) == 0
    assert run(["eval", *common, f"eval.schemes={SCHEMES}", "eval.channels=[awgn,rayleigh,none]",
                "eval.snrs_db=[0,10]", "eval.fcs=[0.25,0.5]", "eval.num_images=8",
                "eval.bootstrap=10", "eval.ue_steps=2", "eval.dm_calibration=16",
                "channel.num_blocks=2", "eval.fid_features=pixels"]) == 0
    return out / "runs" / "eval" / "results.csv"


def _same(a: str, b: str) -> bool:
    """Equal as written (bit for bit), with nan equal to nan."""
    return a == b or (a == b == "") or (a.lower() == b.lower() == "nan")


@pytest.mark.usefixtures("_seed_and_one_thread")
def test_the_fixed_tiny_evaluation_is_bit_identical(tmp_path):
    got = {r["cell"]: r for r in csv.DictReader(_run(tmp_path).open())}
    want = {r["cell"]: r for r in csv.DictReader(GOLDEN.open())}
    assert set(got) == set(want)
    diffs = [(cell, key, want[cell][key], got[cell].get(key)) for cell in want
             for key in want[cell] if key not in NOT_COMPARED
             and not _same(want[cell][key], got[cell].get(key, "<missing>"))]
    assert not diffs, f"{len(diffs)} numbers moved, e.g. {diffs[:5]}"
    assert len(want) == 135 and not any(math.isnan(float(r["psnr_db"])) for r in want.values())
