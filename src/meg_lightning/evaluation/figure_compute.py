"""Quality against UE compute: which scheme wins at which UE compute budget.

Reads results rows (``meg eval``'s ``results.csv`` as typed dicts, :func:`~.sweep.read_results`)
that carry the compute columns of :mod:`.compute` (``ue_gflops``, ``ue_unet_evals``,
``es_gflops``) and plots, one panel per SNR, the quality metric (PSNR, semantic accuracy, ...)
against the UE's GFLOPs per image, one marker per (scheme, fc) row in the style of every figure
(:mod:`.figures_common`: colour by scheme family, marker by rate, one shared legend, identical
images as "exact" stars beyond the clipped axis). The staircase is the Pareto frontier: the best
quality reachable within each UE compute budget (:func:`compute_frontier`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402

from meg_lightning.evaluation.figures_common import (  # noqa: E402
    Style,
    _sort_key,
    channel_title,
    exact_axis,
    exact_star,
    shared_legend,
    shown_value,
    spread_markers,
    suptitle,
    value_range,
)
from meg_lightning.io import atomic_path  # noqa: E402

#: metrics where lower is better (the frontier minimises them); all others are maximised
LOWER_IS_BETTER = ("fid", "latent_mse", "latent_nmse", "opta_latent_mse", "psnr_std")
METRIC_LABELS = {"psnr_db": "PSNR vs I_0 (dB)", "semantic_accuracy": "semantic accuracy",
                 "fid": "FID", "latent_nmse": "latent NMSE", "latent_mse": "latent MSE"}
#: legend label of the compute frontier
FRONTIER_LABEL = "Pareto frontier: the best within each UE budget"
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


def draw_quality_vs_compute(rows: Sequence[dict], *, snrs: Sequence[float],
                            channel: str = "awgn", metric: str = "psnr_db"):
    """The figure of :func:`plot_quality_vs_compute` (not saved): one marker per (scheme, fc) row
    in the style of :mod:`.figures_common` (colour: scheme family, marker: rate; no text on the
    points, the shared legend names them), identical images as "exact" stars beyond the clipped
    axis, and the Pareto frontier (:func:`compute_frontier`) as a staircase."""
    snrs = [float(s) for s in snrs]
    if not snrs:
        raise ValueError("plot_quality_vs_compute: snrs is empty")
    style = Style.from_rows(rows)
    panels = [_select(rows, s, metric, channel) for s in snrs]
    shown = {id(r): shown_value(r, metric) for p in panels for r in p}
    values = [v for v, _ in shown.values() if v is not None]
    exact = any(share > 0 for _, share in shown.values())
    lo, hi = value_range(values)
    linthresh = _linthresh([_num(r["ue_gflops"]) for p in panels for r in p])

    fig, axes = plt.subplots(1, len(snrs), figsize=(3.9 * len(snrs) + 2.6, 4.0), squeeze=False,
                             sharey=True, layout="constrained")
    y_exact = exact_axis(axes[0], lo, hi, strip=exact, top=metric not in LOWER_IS_BETTER)

    def y_of(r: dict) -> float:
        v = shown[id(r)][0]
        return y_exact if v is None else v

    labels = set()
    markers: list = []
    for ax, snr, sel in zip(axes[0], snrs, panels):
        stars: dict[float, list[dict]] = {}
        for r in sorted(sel, key=lambda r: _sort_key(row_label(r))):
            lbl = row_label(r)
            labels.add(lbl)
            kw = style.line(lbl)
            kw.update(ls="none", ms=kw["ms"] + 3, zorder=3, mew=0.8)
            if kw["mfc"] != "white":  # a white rim keeps neighbouring markers apart
                kw["mec"] = "white"
            markers += ax.plot([_num(r["ue_gflops"])], [y_of(r)], **kw)
            if shown[id(r)][1] > 0:
                stars.setdefault(_num(r["ue_gflops"]), []).append(r)
        for x, got in stars.items():
            for i, r in enumerate(got):
                exact_star(ax, x, y_exact, style.colour(row_label(r)), shown[id(r)][1],
                           dodge=i - (len(got) - 1) / 2, left=True)
        front = compute_frontier(sel, snr, metric, channel=None)
        if front:
            ax.step([f["budget"] for f in front], [y_of(f["row"]) for f in front], where="post",
                    color="0.3", lw=1, zorder=2, label=FRONTIER_LABEL)
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center")
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_title(f"{channel_title(channel)}, SNR {snr:g} dB", fontsize=10)
        ax.set_xlabel("UE GFLOPs per image (symlog)")
        ax.grid(True, which="both", alpha=0.3)
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    axes[0][0].set_ylabel(f"{METRIC_LABELS.get(metric, metric)}, {better} is better")
    shared_legend(fig, axes[0], title=style.legend_title(sorted(labels)))
    name = "PSNR" if metric == "psnr_db" else METRIC_LABELS.get(metric, metric)
    suptitle(fig, axes[0], f"{name[:1].upper()}{name[1:]} against UE compute: which "
             "scheme wins at which budget (markers that would cover each other: side by side)")
    spread_markers(fig, markers)
    return fig


def plot_quality_vs_compute(rows: Sequence[dict], path: str | Path, *, snrs: Sequence[float],
                            channel: str = "awgn", metric: str = "psnr_db") -> Path:
    """Quality (``metric``) against UE GFLOPs per image, one panel per SNR in ``snrs``.

    x: ``ue_gflops`` on a symlog axis (0, i.e. ``centralized``, is shown; linear below the
    smallest positive cost's decade); y: ``metric`` (``psnr_db``, ``semantic_accuracy``, ...).
    One marker per (scheme, fc) row, named by the figure's legend (:func:`draw_quality_vs_compute`).
    Rows whose metric is nan / empty are skipped. The staircase is the compute frontier. Written
    atomically; the format follows ``path``'s suffix (png when it has none). Returns the path.
    """
    path = Path(path)
    fig = draw_quality_vs_compute(rows, snrs=snrs, channel=channel, metric=metric)
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
