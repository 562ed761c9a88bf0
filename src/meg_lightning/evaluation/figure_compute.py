"""Quality against UE compute: which scheme wins at which UE compute budget.

Reads results rows (``meg eval``'s ``results.csv`` as typed dicts, :func:`~.sweep.read_results`)
that carry the compute columns of :mod:`.compute` (``ue_gflops``, ``ue_unet_evals``,
``es_gflops``) and plots, one panel per SNR, the quality metric (PSNR, semantic accuracy, ...)
against the UE's GFLOPs per image, one marker per (scheme, fc) row, its size growing with the
channel symbols sent per image. The dashed staircase is the Pareto frontier: the best quality
reachable within each UE compute budget (:func:`compute_frontier`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402

from meg_lightning.io import atomic_path  # noqa: E402

#: metrics where lower is better (the frontier minimises them); all others are maximised
LOWER_IS_BETTER = ("fid", "latent_mse", "latent_nmse", "opta_latent_mse", "psnr_std")
METRIC_LABELS = {"psnr_db": "PSNR vs I_0 (dB)", "semantic_accuracy": "semantic accuracy",
                 "fid": "FID", "latent_nmse": "latent NMSE", "latent_mse": "latent MSE"}
#: relative tolerance when matching a row's SNR to a requested SNR
SNR_RTOL = 1e-9


def _num(v: Any) -> float:
    """A row field as a float; nan for None, '' or anything that is not a number."""
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def row_label(row: dict) -> str:
    """``meg fc=0.25`` (just the scheme when the row has no fc), as in :mod:`.figures`."""
    fc = _num(row.get("fc"))
    return f"{row['scheme']} fc={fc:g}" if math.isfinite(fc) else str(row["scheme"])


def _same_snr(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=SNR_RTOL, abs_tol=1e-9)


def _select(rows: Sequence[dict], snr: float, metric: str, channel: Optional[str]) -> list[dict]:
    """Rows at ``snr`` (and ``channel`` unless None) whose metric and ue_gflops are numbers."""
    out = []
    for r in rows:
        if channel is not None and r.get("channel") != channel:
            continue
        if not _same_snr(_num(r.get("snr_db")), float(snr)):
            continue
        if math.isnan(_num(r.get(metric))) or not math.isfinite(_num(r.get("ue_gflops"))):
            continue
        out.append(r)
    return out


def compute_frontier(rows: Sequence[dict], snr: float, metric: str = "psnr_db", *,
                     channel: Optional[str] = "awgn") -> list[dict]:
    """The Pareto frontier of quality against UE compute at one SNR.

    For each distinct ``ue_gflops`` value B among the usable rows (ascending), the best row with
    ``ue_gflops <= B`` (highest ``metric``, lowest for :data:`LOWER_IS_BETTER`; ties go to less UE
    compute, then fewer symbols). Returns dicts ``{budget, label, value, ue_gflops, row}``; the
    ``value`` sequence is monotone (non-decreasing for maximised metrics). ``channel=None``
    mixes all channel kinds.
    """
    sel = _select(rows, snr, metric, channel)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def key(r: dict) -> tuple:  # larger is better
        sym = _num(r.get("symbols"))
        return (sign * _num(r.get(metric)), -_num(r["ue_gflops"]),
                -(sym if math.isfinite(sym) else math.inf))

    out = []
    best: Optional[dict] = None
    ordered = sorted(sel, key=lambda r: _num(r["ue_gflops"]))
    budgets = sorted({_num(r["ue_gflops"]) for r in sel})
    i = 0
    for budget in budgets:
        while i < len(ordered) and _num(ordered[i]["ue_gflops"]) <= budget:
            if best is None or key(ordered[i]) > key(best):
                best = ordered[i]
            i += 1
        assert best is not None
        out.append({"budget": budget, "label": row_label(best), "value": _num(best[metric]),
                    "ue_gflops": _num(best["ue_gflops"]), "row": best})
    return out


def compute_budget_winners(rows: Sequence[dict], snr: float, metric: str = "psnr_db", *,
                           channel: Optional[str] = "awgn") -> list[tuple[float, str]]:
    """For increasing UE compute budgets (the distinct ``ue_gflops`` values present at ``snr``),
    ``(budget GFLOPs, label of the best scheme within it)``: "which scheme wins at which UE
    compute budget" (:func:`compute_frontier` has the values and rows)."""
    return [(f["budget"], f["label"]) for f in compute_frontier(rows, snr, metric, channel=channel)]


def format_budget_winners(rows: Sequence[dict], snr: float, metric: str = "psnr_db", *,
                          channel: Optional[str] = "awgn") -> str:
    """The frontier as text lines, one per budget where the winner changes, e.g.
    ``UE <= 0.0776 GFLOPs/image: feature (psnr_db 21.3)``."""
    lines, last = [], None
    for f in compute_frontier(rows, snr, metric, channel=channel):
        if f["label"] == last:
            continue
        last = f["label"]
        lines.append(f"UE <= {f['budget']:.4g} GFLOPs/image: {f['label']} ({metric} "
                     f"{f['value']:.4g})")
    return "\n".join(lines)


def _linthresh(values: list[float]) -> float:
    """Linear range of the symlog axis: a decade below the smallest positive UE cost."""
    pos = [v for v in values if v > 0]
    if not pos:
        return 1.0
    return 10.0 ** math.floor(math.log10(min(pos)))


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
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def compute_snrs(rows: list[dict], channel: str = "awgn") -> list[float]:
    """The SNRs of the quality-vs-UE-compute figure: -10, 0 and 10 dB when swept, else up to
    three swept SNRs spread over the range."""
    snrs = sorted({float(r["snr_db"]) for r in rows if r["channel"] == channel
                   and r.get("ue_gflops") is not None and math.isfinite(float(r["snr_db"]))})
    pick = [s for s in (-10.0, 0.0, 10.0) if s in snrs]
    return pick or snrs[:: max(1, len(snrs) // 3)][:3]
