"""Table II: real channel symbols sent per image and model sizes, from the real model shapes.

Symbols (real values per generated image, the paper's "transmitted data"):

- centralized: the RGB image, 3 H W reals. For 512x512 this is 786,432, while the paper prints
  1,048,576 = 512 x 512 x 4, i.e. four values per pixel (an RGBA buffer, or the 4 latent channels
  at full resolution). SD-v1.5 outputs 3-channel images and our `centralized` scheme sends 3 H W
  reals, so we count 786,432 and print the paper's number beside it;
- feature: the latent, |z| = C (H/f_d) (W/f_d) = 16,384 for 4x64x64;
- meg fc: the seed, k = round(fc |z|): 1,638 / 4,915 / 8,192 / 11,469 / 14,746 for fc 0.1-0.9.

Complex channel uses are half the real symbols (rounded up). Model sizes count parameters of the
generator (U-Net + VAE + CLIP text encoder) and, for MEG, the compression encoder and decoder
built from :func:`meg_lightning.codecs.base.build_codec` on the meta device (no memory is
allocated), at 4 bytes per parameter (float32). The paper's sizes (7.17 GB for SD-v1.5 alone)
match neither float32 (4.26 GB) nor float16 weights, presumably a checkpoint file with extra
state; we print them beside ours rather than reproduce them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from meg_lightning.codecs.base import build_codec, code_length
from meg_lightning.generation.sd15 import build_components
from meg_lightning.io import atomic_write_text
from meg_lightning.schemes import with_role

PAPER_FCS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Table II of the paper: transmitted data (real values) and total model size (GB) per mode.
PAPER_SYMBOLS = {"centralized": 1_048_576, "feature": 16_384, "meg fc=0.1": 1_638,
                 "meg fc=0.3": 4_915, "meg fc=0.5": 8_192, "meg fc=0.7": 11_469,
                 "meg fc=0.9": 14_746}
PAPER_SIZE_GB = {"centralized": 7.17, "feature": 7.17, "meg fc=0.1": 7.4, "meg fc=0.3": 8.16,
                 "meg fc=0.5": 8.78, "meg fc=0.7": 9.64, "meg fc=0.9": 10.08}
BYTES_PER_PARAM = 4  # float32

NOTES = [
    "symbols: real values sent per image; channel_uses = ceil(symbols / 2) complex channel uses.",
    "centralized: 3 x H x W RGB reals (786,432 for 512x512). The paper prints 1,048,576 = 512 x "
    "512 x 4 (four values per pixel, e.g. an RGBA buffer); SD-v1.5 images have 3 channels, so we "
    "count and send 786,432.",
    "feature: |z| = C x H/f_d x W/f_d; meg: k = round(fc |z|) (codecs.base.code_length).",
    "sizes: parameters x 4 bytes (float32), GB = 1e9 bytes; codec built on the meta device. The "
    "paper's sizes (7.17 GB for SD-v1.5) exceed float32 weights (4.26 GB) and are shown for "
    "reference only.",
]


def sd15_generator_params() -> dict[str, int]:
    """Parameter counts of SD-v1.5's U-Net, VAE and CLIP ViT-L/14 text encoder, built from their
    architecture configs (:mod:`meg_lightning.generation.sd15`) on the meta device (no weights)."""
    parts = build_components(device="meta")
    return {"unet": count_params(parts["unet"]), "vae": count_params(parts["vae"]),
            "text": count_params(parts["text_encoder"])}


def pipeline_params(pipe) -> dict[str, int]:
    """Parameter counts of a loaded pipeline's U-Net, VAE and text encoder."""
    return {"unet": count_params(pipe.unet), "vae": count_params(pipe.vae),
            "text": count_params(pipe.text_encoder)}


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def codec_params(latent_shape: Sequence[int], fc: float, arch: str = "paper",
                 settings: Any = None) -> tuple[int, int]:
    """(encoder, decoder) parameter counts of the codec of architecture ``arch`` (its settings:
    None for the defaults) for ``latent_shape`` at rate ``fc``."""
    with torch.device("meta"):
        enc, dec = build_codec(tuple(latent_shape), fc, arch, settings)
    return count_params(enc), count_params(dec)


def table2(image_shape: Sequence[int] = (3, 512, 512), latent_shape: Sequence[int] = (4, 64, 64),
           fcs: Sequence[float] = PAPER_FCS, *, arch: str = "paper", settings: Any = None,
           generator_params: Optional[dict[str, int]] = None) -> list[dict]:
    """Rows of Table II for these shapes: mode, symbols, channel_uses, parameter counts, sizes.

    The modes are the paper's three: the schemes of its pixel and latent benchmarks and the
    proposed scheme at every rate, with the codec of architecture ``arch`` (``settings``).
    ``generator_params`` (unet / vae / text counts) defaults to SD-v1.5's; the paper's numbers are
    attached in ``paper_symbols`` / ``paper_size_gb`` where the mode is one of the paper's.
    """
    gen = generator_params if generator_params is not None else sd15_generator_params()
    g = sum(gen.values())
    numel = math.prod(latent_shape)
    (pixels,), (latent,), (proposed,) = (with_role(r) for r in ("pixels", "latent", "proposed"))
    modes: list[tuple[str, int, int, int]] = [
        (pixels, math.prod(image_shape), 0, 0),
        (latent, numel, 0, 0),
    ]
    for fc in fcs:
        enc, dec = codec_params(latent_shape, fc, arch, settings)
        modes.append((f"{proposed} fc={fc:g}", code_length(fc, numel), enc, dec))
    rows = []
    for mode, symbols, enc, dec in modes:
        total = g + enc + dec
        rows.append({
            "mode": mode, "symbols": symbols, "channel_uses": math.ceil(symbols / 2),
            "paper_symbols": PAPER_SYMBOLS.get(mode), "generator_params": g,
            "encoder_params": enc, "decoder_params": dec, "total_params": total,
            "total_size_gb": round(total * BYTES_PER_PARAM / 1e9, 3),
            "paper_size_gb": PAPER_SIZE_GB.get(mode),
            "image_shape": "x".join(map(str, image_shape)),
            "latent_shape": "x".join(map(str, latent_shape)),
        })
    return rows


def to_markdown(rows: list[dict], title: str = "Table II") -> str:
    cols = ["mode", "symbols", "channel_uses", "paper_symbols", "encoder_params", "decoder_params",
            "total_params", "total_size_gb", "paper_size_gb"]
    fmt = lambda v: "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)  # noqa: E731
    lines = [f"## {title} (image {rows[0]['image_shape']}, latent {rows[0]['latent_shape']})", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", "Notes:"] + [f"- {n}" for n in NOTES]
    return "\n".join(lines) + "\n"


def write_table2(rows: list[dict], folder: str | Path, name: str = "table2") -> list[Path]:
    """``{name}.csv`` and ``{name}.md`` in ``folder`` (atomically)."""
    folder = Path(folder)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return [atomic_write_text(folder / f"{name}.csv", buf.getvalue()),
            atomic_write_text(folder / f"{name}.md", to_markdown(rows))]
