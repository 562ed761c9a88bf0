"""The trade-off figures of `meg figures`: FID against the power budget per power-allocation policy
(Fig. 10, from `meg train-ppo`'s ``fig10.csv``), quality against UE compute
(:mod:`.figure_compute`) and the analog latent codes against the Gaussian OPTA bound."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402

from meg_lightning.channels import CHANNELS  # noqa: E402
from meg_lightning.evaluation.figure_compute import (  # noqa: E402
    compute_snrs,
    plot_quality_vs_compute,
)
from meg_lightning.evaluation.figures_common import (  # noqa: E402
    FORMATS,
    _channels,
    _finite,
    _sort_key,
    label,
    save,
)
from meg_lightning.evaluation.tradeoff import codec_schemes  # noqa: E402
from meg_lightning.schemes import SCHEMES  # noqa: E402

FIG10_COLUMNS = ("p_max_mw", "policy", "fid", "psnr", "latent_mse", "n_images")


def read_fig10(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("p_max_mw", "policy", "fid") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(FIG10_COLUMNS)}")
    return rows


def fig_power(rows: list[dict], path_stem: Path) -> list[Path]:
    """Fig. 10: FID against the power budget P_max (mW), one line per policy.

    When the PPO stage ran on synthetic seeds (no images, FID ``nan``) the latent MSE is plotted
    instead, and the axis says so.
    """
    metric = "fid" if any(_finite(r.get("fid")) for r in rows) else "latent_mse"
    rows = [r for r in rows if _finite(r.get(metric))]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(5.2, 4))
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["policy"]].append(r)
    for policy in sorted(by):
        pts = sorted(by[policy], key=lambda r: float(r["p_max_mw"]))
        ax.plot([float(r["p_max_mw"]) for r in pts], [float(r[metric]) for r in pts], marker="o",
                label=policy)
    n = sorted({str(r.get("n_images")) for r in rows if r.get("n_images") not in (None, "", "0")})
    ax.set_xlabel("power budget $P_{max}$ (mW)")
    if metric == "fid":
        ax.set_ylabel("FID, lower is better")
        ax.set_title(f"FID against power constraint ({'/'.join(n) or '?'} images per point)",
                     fontsize=10)
    else:
        ax.set_ylabel("latent MSE, lower is better")
        ax.set_title("Latent MSE against power constraint (no images: FID unavailable)",
                     fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path_stem)


def fig_compute(rows: list[dict], out: Path) -> list[Path]:
    """Quality (PSNR; on mini also semantic accuracy) against UE GFLOPs per image, AWGN, a few
    SNRs: ``fig_compute_psnr`` and ``fig_compute_semantic`` (evaluation.figure_compute)."""
    snrs = compute_snrs(rows)
    if not snrs:
        return []
    paths = []
    for name, metric in (("fig_compute_psnr", "psnr_db"),
                         ("fig_compute_semantic", "semantic_accuracy")):
        if any(_finite(r.get(metric)) for r in rows):
            for fmt in FORMATS:
                paths.append(plot_quality_vs_compute(rows, out / f"{name}.{fmt}", snrs=snrs,
                                                     metric=metric))
    return paths


def fig_codecs(rows: list[dict], path_stem: Path) -> list[Path]:
    """Test latent MSE against SNR of the analog latent codes with a rate (the learned codecs and
    the optimal linear code) per channel and rate, with the Gaussian OPTA bound of each rate on
    AWGN (black, dotted). Nothing unless the SNR-adaptive codec and another code were swept."""
    codes = codec_schemes()
    rows = [r for r in rows if r["scheme"] in codes and _finite(r.get("latent_mse"))
            and not CHANNELS[r["channel"]].noiseless]
    lead = [s for s in codes if SCHEMES[s].snr_adaptive]
    if len({r["scheme"] for r in rows}) < 2 or not any(r["scheme"] in lead for r in rows):
        return []
    kinds = _channels(rows)
    styles = dict(zip(codes, (":", "-", "--", "-.")))
    styles.update({s: "-" for s in lead})
    styles.update({s: "--" for s in codes if SCHEMES[s].reference_code})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        series: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["channel"] == kind:
                series[label(r)].append(r)
        colours: dict[float, str] = {}
        for lbl in sorted(series, key=_sort_key):
            pts = sorted(series[lbl], key=lambda r: float(r["snr_db"]))
            fc = float(pts[0]["fc"])
            (line,) = ax.semilogy([float(r["snr_db"]) for r in pts],
                                  [float(r["latent_mse"]) for r in pts], marker="o", ms=3,
                                  label=lbl, ls=styles[pts[0]["scheme"]],
                                  color=colours.get(fc))
            colours.setdefault(fc, line.get_color())
            opta = [(float(r["snr_db"]), float(r["opta_latent_mse"])) for r in pts
                    if _finite(r.get("opta_latent_mse"))]
            if pts[0]["scheme"] in lead and opta:
                ax.semilogy(*zip(*opta), color="k", ls=":", lw=1,
                            label=f"OPTA fc={fc:g}" if kind == "awgn" else None)
        ax.set_title(kind.upper() if kind == "awgn" else kind.capitalize())
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test latent MSE per entry, lower is better")
    key = "; ".join(f"{dict(zip((':', '-', '--', '-.'), ('dotted', 'solid', 'dashed', 'dash-dot')))[styles[s]]}: {s}"
                    for s in codes if any(r["scheme"] == s for r in rows))
    fig.suptitle("Learned codecs against the optimal linear code and the Gaussian OPTA bound "
                 f"(colour: rate; {key}; black dotted: OPTA on AWGN)", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    return save(fig, path_stem)
