"""The figure code of `meg figures` before issue 27 (``git show a9955d8:src/meg_lightning/
evaluation/figures.py`` and ``figure_compute.py``): Figs. 6-7 and the quality-vs-UE-compute
figure, copied verbatim except that each returns its figure instead of saving it.

Test data, not part of the package: ``tests/test_figures.py`` renders these on the fixed results
and asserts that its checks flag them (legend missing series, colours shared between scheme
families, overlapping labels, the PSNR axis stretched to the 100 dB cap, an unlabelled line).
"""
# ruff: noqa
# fmt: off
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from meg_lightning.evaluation.figure_compute import (
    METRIC_LABELS,
    _linthresh,
    _num,
    _select,
    compute_frontier,
    row_label,
)
from meg_lightning.evaluation.figures_common import _channels, _finite, _sort_key, label
from meg_lightning.schemes import names, scheme_class


def fid_label(rows: list[dict]) -> str:
    kinds = {str(r.get("fid_features")) for r in rows if r.get("fid_features")}
    if kinds == {"inception"}:
        return "FID (Inception-v3)"
    if kinds:
        return f"{' / '.join(sorted(kinds))} (not Inception FID)"
    return "FID"


def linestyle(scheme: str) -> str:
    """Baselines dashed (the reference code) or dotted (a real channel code); the rest solid."""
    if scheme not in names():
        return "-"
    cls = scheme_class(scheme)
    return "--" if cls.reference_code else ":" if cls.channel_code == "ldpc" else "-"
METRIC_NAMES = {"psnr_db": "PSNR", "fid": "FID", "semantic_accuracy": "Semantic accuracy"}


def fig_vs_snr(rows: list[dict], metric: str, path_stem: Path) -> list[Path]:
    """Figs. 6-7: ``metric`` (psnr_db | fid | semantic_accuracy) against SNR, one line per scheme
    (and fc). Nothing when no row has a finite value of ``metric``."""

    kinds = _channels(rows)
    if not kinds or not any(_finite(r.get(metric)) for r in rows if r["channel"] in kinds):
        return []
    # noiseless values, except PSNRs at the cap (identical images), which would flatten the axes
    noiseless = {label(r): float(r[metric]) for r in rows
                 if r["channel"] == "none" and _finite(r.get(metric))
                 and not (metric == "psnr_db" and r.get("psnr_capped") == r.get("n_images"))}
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        series: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["channel"] == kind and r.get(metric) is not None:
                series[label(r)].append(r)
        for lbl in sorted(series, key=_sort_key):
            pts = sorted(series[lbl], key=lambda r: float(r["snr_db"]))
            x = np.array([float(r["snr_db"]) for r in pts])
            y = np.array([float(r[metric]) for r in pts])
            (line,) = ax.plot(x, y, marker="o", ms=3, label=lbl,  # baselines dashed / dotted
                              ls=linestyle(lbl.partition(" ")[0]))
            ref = noiseless.get(lbl)
            if ref is not None:  # the same scheme over the noiseless channel, dotted
                ax.axhline(ref, color=line.get_color(), ls=":", lw=1)
            if metric == "fid":
                lo = np.array([float(r.get("fid_ci_low") or np.nan) for r in pts])
                hi = np.array([float(r.get("fid_ci_high") or np.nan) for r in pts])
                if np.isfinite(lo).any():
                    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        refs = {float(r["semantic_accuracy_ref"]) for r in rows if r["channel"] == kind
                and _finite(r.get("semantic_accuracy_ref"))}
        if metric == "semantic_accuracy" and refs:  # the ceiling: the perfect images I_0
            ax.axhline(max(refs), color="k", ls="--", lw=1, label="$I_0$ (no channel)")
        ax.set_title(kind.upper() if kind == "awgn" else kind.capitalize())
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    ylabel = {"psnr_db": "PSNR (dB), higher is better",
              "semantic_accuracy": "all attributes match the prompt (share), higher is better"
              }.get(metric, f"{fid_label(rows)}, lower is better")
    axes[0][0].set_ylabel(ylabel)
    n = {r.get("n_images") for r in rows}
    fig.suptitle(f"{METRIC_NAMES.get(metric, metric)} against SNR "
                 f"({'/'.join(str(v) for v in sorted(x for x in n if x is not None))} images per point)",
                 fontsize=10)
    axes[0][-1].legend(fontsize=8)
    return fig


def plot_quality_vs_compute(rows: Sequence[dict], path: str | Path, *, snrs: Sequence[float],
                            channel: str = "awgn", metric: str = "psnr_db") -> Path:
    """Quality (``metric``) against UE GFLOPs per image, one panel per SNR in ``snrs``.

    x: ``ue_gflops`` on a symlog axis (0, i.e. ``centralized``, is shown; linear below the
    smallest positive cost's decade); y: ``metric`` (``psnr_db``, ``semantic_accuracy``, ...).
    One marker per (scheme, fc) row, labelled with the scheme and fc; its area grows with the
    row's ``symbols`` (real channel symbols per image, also printed next to it). Rows whose metric
    is nan / empty are skipped. The dashed staircase is the compute frontier. Written atomically;
    the format follows ``path``'s suffix (png when it has none). Returns the path.
    """
    path = Path(path)
    snrs = [float(s) for s in snrs]
    if not snrs:
        raise ValueError("plot_quality_vs_compute: snrs is empty")
    panels = [_select(rows, s, metric, channel) for s in snrs]
    labels = sorted({row_label(r) for p in panels for r in p})
    cmap = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    color = {lbl: cmap(i % cmap.N) for i, lbl in enumerate(labels)}
    all_sym = [_num(r.get("symbols")) for p in panels for r in p]
    max_sym = max([s for s in all_sym if math.isfinite(s) and s > 0], default=1.0)
    linthresh = _linthresh([_num(r["ue_gflops"]) for p in panels for r in p])

    fig, axes = plt.subplots(1, len(snrs), figsize=(4.6 * len(snrs), 4.0), squeeze=False,
                             sharey=True)
    for ax, snr, sel in zip(axes[0], snrs, panels):
        for r in sel:
            x, y, sym = _num(r["ue_gflops"]), _num(r[metric]), _num(r.get("symbols"))
            size = 20 + 180 * (math.log1p(sym) / math.log1p(max_sym)
                               if math.isfinite(sym) and sym > 0 else 0.0)
            lbl = row_label(r)
            ax.scatter([x], [y], s=size, color=color[lbl], edgecolor="black", linewidth=0.5,
                       zorder=3, label=lbl)
            sym_txt = f"{int(sym)} sym" if math.isfinite(sym) else "? sym"
            ax.annotate(f"{lbl}\n{sym_txt}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=6)
        front = compute_frontier(sel, snr, metric, channel=None)
        if front:
            xs = [f["budget"] for f in front]
            ys = [f["value"] for f in front]
            ax.step(xs, ys, where="post", linestyle="--", color="grey", linewidth=1, zorder=2)
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center")
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_title(f"{channel}, SNR {snr:g} dB")
        ax.set_xlabel("UE GFLOPs per image (symlog)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(METRIC_LABELS.get(metric, metric))
    if labels:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=color[lbl],
                              markeredgecolor="black", label=lbl) for lbl in labels]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(labels), 6), fontsize=7,
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * math.ceil(len(labels) / 6)))
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} against UE compute (marker area: "
                 "channel symbols per image; dashed: best within budget)", fontsize=9)
    return fig


