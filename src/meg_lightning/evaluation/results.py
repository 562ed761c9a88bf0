"""The results file of `meg eval`: its columns, their types, and reading / writing it.

One row per cell; every field is written as text and read back by its column's declared type
(never guessed): a config hash such as ``6e30271160047847`` stays a string, a 63-bit seed an int.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

from meg_lightning.errors import UserError

COLUMNS = [
    "cell", "scheme", "channel", "snr_db", "fc", "symbols", "channel_uses", "n_images",
    "psnr_db", "psnr_std", "psnr_capped", "psnr_cap_db",
    "fid", "fid_se", "fid_ci_low", "fid_ci_high", "fid_ci_level", "fid_bootstrap", "fid_n_images",
    "fid_features",
    # LPIPS against I_0 (lower is better) and CLIP score against the prompt (higher is better):
    # means over the images with their standard deviations, the network that scored them, and
    # the CLIP score of I_0 itself; empty without their weights (metrics.lpips, metrics.clip_score)
    "lpips", "lpips_std", "lpips_net", "clip_score", "clip_score_std", "clip_score_ref",
    "clip_model",
    "semantic_accuracy", "semantic_accuracy_ref",
    "latent_nmse", "latent_mse", "opta_latent_mse",
    # all-or-nothing and coded schemes (digital, digital-image, capacity, prompt): share of images
    # delivered, payload bits per image, SNR at which the payload just fits an ideal code,
    # block error rate of the channel code and the modulation-and-coding scheme index
    "success", "payload_bits", "threshold_snr_db", "bler", "mcs",
    # generative receivers and the UE-compute axis (evaluation.compute)
    "ue_unet_evals", "ue_gflops", "es_gflops", "dm_sigma_e2",
    "num_blocks", "equalizer", "seed", "codec_id", "config_hash", "time_s",
]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    return str(v)


def rows_to_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    return buf.getvalue()


#: column types of the results file; a column not listed is a float. Read back by name, never
#: guessed from the text: a config hash such as ``6e30271160047847`` is a string, not 6e30271...
#: (inf), and a 63-bit seed is an int, not a float64 that loses its last digits.
STR_COLUMNS = ("cell", "scheme", "channel", "fid_features", "lpips_net", "clip_model", "equalizer",
               "codec_id", "config_hash")
INT_COLUMNS = ("symbols", "channel_uses", "n_images", "psnr_capped", "fid_bootstrap",
               "fid_n_images", "num_blocks", "seed")
#: columns a results file must have for the sweep to resume it and `meg figures` to plot it
REQUIRED_COLUMNS = ("cell", "scheme", "channel", "snr_db", "fc", "config_hash")


def _parse(column: str, v: str) -> Any:
    """One field by its column's type (empty -> None); ValueError names what was expected."""
    if v == "":
        return None
    if column in STR_COLUMNS:
        return v
    if column in INT_COLUMNS:
        try:
            return int(v)
        except ValueError:
            raise ValueError("an integer") from None
    if column in COLUMNS:
        try:
            return float(v)
        except ValueError:
            raise ValueError("a number, inf or nan") from None
    return v  # a column another version added: kept as text


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results CSV, each field typed by its column (empty fields -> None).

    A file that is not a results CSV (not UTF-8 text, missing columns, a field of the wrong type)
    raises :class:`UserError` naming the file, the row and what was expected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{str(path)!r} is not a results CSV (byte {e.start} is not UTF-8): "
                        "expected the file `meg eval` writes (delete or move it)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{str(path)!r} is not a results CSV (no column {', '.join(missing)}): "
                        "expected the file `meg eval` writes (delete or move it)")
    rows = []
    for n, r in enumerate(reader, 2):
        row = {}
        for k, v in r.items():
            if k is None or v is None:
                raise UserError(f"{str(path)!r} line {n} has {len(reader.fieldnames or [])} "
                                "columns in the header but not in this row: expected the file "
                                "`meg eval` writes (delete or move it)")
            try:
                row[k] = _parse(k, v)
            except ValueError as e:
                raise UserError(f"{str(path)!r} line {n}: {k}={v!r}: expected {e}") from None
        rows.append(row)
    return rows


