"""What every figure of `meg figures` shares: a row's legend label and the plot order of the
schemes, the channel kinds present, the finite-number test on a row field, and writing a figure
as PNG and PDF."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402

from meg_lightning.channels import CHANNELS  # noqa: E402
from meg_lightning.io import atomic_path  # noqa: E402
from meg_lightning.schemes import order  # noqa: E402

FORMATS = ("png", "pdf")


def label(row: dict) -> str:
    """Legend label of a row's scheme, e.g. ``meg fc=0.5`` (just the scheme when fc is empty)."""
    fc = row.get("fc")
    return f"{row['scheme']} fc={float(fc):g}" if _finite(fc) else str(row["scheme"])


def _sort_key(lbl: str) -> tuple:
    scheme, _, fc = lbl.partition(" fc=")
    return (order(scheme), float(fc) if fc else 0.0)


def save(fig, path_stem: Path, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path_stem.png`` and ``.pdf`` (atomically) and close it."""
    paths = []
    for fmt in FORMATS:
        p = path_stem.with_suffix(f".{fmt}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def _channels(rows: list[dict]) -> list[str]:
    """The noisy channel models of ``rows``, in the registry's order (the noiseless reference is
    drawn as a line on their panels)."""
    return [c for c, cls in CHANNELS.items()
            if not cls.noiseless and any(r["channel"] == c for r in rows)]


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
