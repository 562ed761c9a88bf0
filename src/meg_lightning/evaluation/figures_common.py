"""What every figure of `meg figures` shares: one style, read from the scheme registry.

- **Label and order**: a row's legend label (``meg fc=0.5``; :func:`label`) and the plot order of
  the schemes (:func:`_sort_key`, the registry's ``order``).
- **Colour**: one hue per scheme family (a scheme and its generative receiver ``X+dm``), the
  registered class's ``hue`` (:func:`family_colours`); a hue already taken by a family earlier in
  the registry's order is replaced by a free one, so two families never share a colour.
- **Rate and receiver**: the rate fc is the marker and the line style (:class:`Style`), ranked
  over the rates of the results so that one rate looks the same in every figure; ``X+dm`` draws
  hollow markers and a thicker line in X's hue.
- **Identical images**: a PSNR at the cap (``psnr_capped`` images of ``n_images`` identical to
  I_0, each counted at ``psnr_cap_db``) is not a number to plot. A cell whose images are all
  identical is drawn as an "exact" star in a shaded strip beyond the clipped axis
  (:func:`exact_axis`); a cell with some identical images is plotted at the mean PSNR of the
  others, with a star in the strip labelled with the share that is exact (:func:`shown_psnr`).
- **Legend**: one shared legend beside the panels, every plotted series in it once
  (:func:`shared_legend`).
- the channel kinds present, the finite-number test on a row field, and writing a figure as PNG
  and PDF (:func:`save`).
"""

from __future__ import annotations

import math
import textwrap
import zlib
from pathlib import Path
from typing import Iterable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from meg_lightning.channels import CHANNELS  # noqa: E402
from meg_lightning.io import atomic_path  # noqa: E402
from meg_lightning.metrics.image import PSNR_CAP_DB  # noqa: E402
from meg_lightning.schemes import SCHEMES, base_name, is_dm, order  # noqa: E402

FORMATS = ("png", "pdf")

#: colours given to a family whose registered hue is missing or taken by an earlier family
SPARE_COLOURS = ("tab:pink", "tab:cyan", "tab:olive", "tab:brown", "tab:purple", "tab:blue",
                 "tab:green", "tab:orange", "tab:red", "gold", "navy", "teal", "maroon",
                 "darkslategray", "lime", "magenta", "sienna", "black")
#: marker and line style per rate, by the rate's rank among the rates of the results
FC_MARKERS = ("v", "s", "^", "D", "P", "X", "h", "<", ">", "p")
FC_LINES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (6, 2)),
            (0, (3, 1, 1, 1)), (0, (8, 2, 2, 2)))
#: a row without a rate
NO_FC = ("o", "-")

#: legend label of the "exact" stars (cells whose images are identical to I_0)
EXACT_LABEL = "identical to $I_0$ (exact; % = share of images)"
#: legend label of the reference lines of a scheme over the noiseless channel
NOISELESS_LABEL = "same scheme, noiseless channel (dotted)"
#: tick label of the "exact" strip
EXACT_TICK = "exact"


def label(row: dict) -> str:
    """Legend label of a row's scheme, e.g. ``meg fc=0.5`` (just the scheme when fc is empty)."""
    fc = row.get("fc")
    return f"{row['scheme']} fc={float(fc):g}" if _finite(fc) else str(row["scheme"])


def split_label(lbl: str) -> tuple[str, Optional[float]]:
    """``meg fc=0.5`` -> (``meg``, 0.5); ``feature`` -> (``feature``, None)."""
    scheme, _, fc = lbl.partition(" fc=")
    try:
        return scheme, float(fc) if fc else None
    except ValueError:
        return scheme, None


def _sort_key(lbl: str) -> tuple:
    scheme, _, fc = lbl.partition(" fc=")
    return (order(scheme), float(fc) if fc else 0.0)


# -- colours: one per scheme family, from the registry ---------------------------------------


def _same(a, b) -> bool:
    return mcolors.to_rgb(a) == mcolors.to_rgb(b)


def family_colours() -> dict[str, str]:
    """The colour of every registered scheme family in the registry's order: the class's ``hue``,
    or, when it is missing or an earlier family has it, the first free colour of
    :data:`SPARE_COLOURS`."""
    out: dict[str, str] = {}
    for name, cls in SCHEMES.items():
        hue = getattr(cls, "hue", None)
        if not hue or not mcolors.is_color_like(hue) or any(_same(hue, c) for c in out.values()):
            hue = next((c for c in SPARE_COLOURS if not any(_same(c, t) for t in out.values())),
                       "black")
        out[name] = hue
    return out


def scheme_colour(scheme: str, colours: Optional[dict[str, str]] = None) -> str:
    """The colour of ``scheme``'s family (``meg+dm`` -> ``meg``'s); a name the registry does not
    know (a results file of another version) gets a spare colour chosen by its name."""
    colours = family_colours() if colours is None else colours
    fam = base_name(scheme)
    if fam in colours:
        return colours[fam]
    free = [c for c in SPARE_COLOURS if not any(_same(c, t) for t in colours.values())]
    free = free or list(SPARE_COLOURS)
    return free[zlib.crc32(fam.encode()) % len(free)]


class Style:
    """How a series looks: its family's colour, its rate's marker and line style, hollow markers
    and a thicker line for a generative receiver ``X+dm``. ``fcs``: every rate of the results
    (the same rate is drawn the same way in every figure of a run)."""

    def __init__(self, fcs: Iterable[float] = ()):
        self.fcs = sorted({float(f) for f in fcs})
        self.colours = family_colours()

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> "Style":
        return cls(float(r["fc"]) for r in rows if _finite(r.get("fc")))

    def colour(self, lbl: str) -> str:
        return scheme_colour(split_label(lbl)[0], self.colours)

    def fc_style(self, fc: Optional[float]) -> tuple:
        """(marker, line style) of rate ``fc`` (None: no rate)."""
        if fc is None:
            return NO_FC
        if fc not in self.fcs:
            self.fcs = sorted({*self.fcs, fc})
        i = self.fcs.index(fc)
        return FC_MARKERS[i % len(FC_MARKERS)], FC_LINES[i % len(FC_LINES)]

    def line(self, lbl: str) -> dict:
        """Keyword arguments of ``ax.plot`` for the series ``lbl`` (``label`` included)."""
        scheme, fc = split_label(lbl)
        marker, ls = self.fc_style(fc)
        colour = self.colour(lbl)
        dm = is_dm(scheme)
        return {"color": colour, "marker": marker, "ls": ls, "lw": 2.2 if dm else 1.3,
                "ms": 5 if dm else 4, "mfc": "white" if dm else colour, "mec": colour,
                "label": lbl}

    def legend_title(self, labels: Sequence[str]) -> str:
        """What the encodings mean, for the legend's title (only those the figure uses)."""
        parts = ["colour: scheme"]
        if any(split_label(lbl)[1] is not None for lbl in labels):
            parts.append("marker and line: rate $f_c$")
        if any(is_dm(split_label(lbl)[0]) for lbl in labels):
            parts.append("hollow: +dm (UE runs the generator)")
        return "\n".join(parts)


# -- identical images: the "exact" strip -------------------------------------------------------


def exact_share(row: dict) -> float:
    """The share of a cell's images identical to I_0 (at the PSNR cap). A row without the count
    (an older results file) is all exact when its PSNR is +inf or at the cap, else 0."""
    capped, n = row.get("psnr_capped"), row.get("n_images")
    if _finite(capped) and _finite(n) and float(n) > 0:
        return min(1.0, max(0.0, float(capped) / float(n)))
    try:
        psnr = float(row.get("psnr_db"))
    except (TypeError, ValueError):
        return 0.0
    cap = float(row["psnr_cap_db"]) if _finite(row.get("psnr_cap_db")) else PSNR_CAP_DB
    return 1.0 if psnr == math.inf or psnr >= cap else 0.0


def shown_psnr(row: dict) -> Optional[float]:
    """The PSNR to plot for a row: None when every image is identical to I_0 (drawn as "exact"),
    the mean over the images that are not when some are (``psnr_db`` counts each identical image
    at ``psnr_cap_db``), else ``psnr_db``; nan when it has none."""
    psnr = float(row["psnr_db"]) if _finite(row.get("psnr_db")) else math.nan
    share = exact_share(row)
    if share >= 1.0:
        return None
    if share > 0.0 and _finite(row.get("psnr_cap_db")):
        n, capped = float(row["n_images"]), float(row["psnr_capped"])
        return (n * psnr - capped * float(row["psnr_cap_db"])) / (n - capped)
    return psnr


def shown_value(row: dict, metric: str) -> tuple[Optional[float], float]:
    """(value to plot, share of identical images) of ``metric`` for a row: PSNR as
    :func:`shown_psnr`; FID None (exact: 0 up to numerics) when every image is identical; other
    metrics as they are (share 0)."""
    share = exact_share(row)
    if metric == "psnr_db":
        return shown_psnr(row), share
    if metric == "fid" and share >= 1.0:
        return None, 1.0
    v = row.get(metric)
    return (float(v) if _finite(v) else math.nan), 0.0


def value_range(values: Iterable[float], log: bool = False) -> tuple[float, float]:
    """(lowest, highest) finite value (positive ones when ``log``); (0, 1) when there is none."""
    vals = [float(v) for v in values if _finite(v) and (not log or float(v) > 0)]
    return (min(vals), max(vals)) if vals else ((1.0, 10.0) if log else (0.0, 1.0))


def exact_axis(axes, lo: float, hi: float, *, strip: bool, top: bool = True,
               log: bool = False) -> Optional[float]:
    """Limits of the (shared) value axes of ``axes`` from the data range [lo, hi]; with
    ``strip``, a shaded strip beyond the data (above when ``top``, below otherwise) whose one
    tick reads "exact". Returns the strip's y (None without a strip)."""

    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    g = (lambda v: 10.0 ** v) if log else (lambda v: v)
    a, b = f(lo), f(hi)
    span = b - a if b > a else (1.0 if log else max(abs(b), 1.0))
    pad = 0.06 * span
    lim = [a - pad, b + pad]
    y_exact = None
    if strip:
        width = 0.14 * (span + 2 * pad)
        edge = lim[1] if top else lim[0]
        lim = [lim[0], lim[1] + width] if top else [lim[0] - width, lim[1]]
        y_exact = g(edge + width / 2 if top else edge - width / 2)
        band = (g(edge), g(lim[1])) if top else (g(lim[0]), g(edge))
    for ax in axes:
        if log:
            ax.set_yscale("log")
        ax.set_ylim(g(lim[0]), g(lim[1]))
        if strip:
            ax.axhspan(*band, color="0.92", zorder=0, lw=0)
    if strip:
        base = (ticker.LogLocator(numticks=8) if log else ticker.MaxNLocator(6))
        inner = (g(a - pad), g(b + pad))  # the data's part of the axis, without the strip
        eps = 1e-9 * (inner[1] - inner[0])
        ticks = [t for t in base.tick_values(*inner) if inner[0] - eps <= t <= inner[1] + eps]

        def fmt(v, pos=None):
            if math.isclose(v, y_exact, rel_tol=1e-9, abs_tol=1e-12):
                return EXACT_TICK
            if log and v > 0 and math.isclose(math.log10(v), round(math.log10(v)), abs_tol=1e-9):
                return f"$10^{{{round(math.log10(v))}}}$"
            return f"{v:g}"

        for ax in axes:
            ax.yaxis.set_major_locator(ticker.FixedLocator(sorted([*ticks, y_exact])))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(fmt))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
    return y_exact


def exact_star(ax, x: float, y: float, colour: str, share: float, dodge: float = 0,
               left: bool = False) -> None:
    """An "exact" star at (x, y) in ``colour`` (moved ``dodge`` steps sideways when stars
    share an x), labelled with the share of exact images when not all of them are (on its left
    when ``left``: near the right edge of the panel)."""
    shift = ScaledTranslation(dodge * 8 / 72, 0, ax.figure.dpi_scale_trans)
    ax.plot([x], [y], ls="none", marker="*", ms=10, color=colour, mec="black", mew=0.5,
            zorder=4, transform=ax.transData + shift, label=EXACT_LABEL)
    if share < 1.0:
        ax.annotate(f"{share:.0%}", (x, y), xytext=(dodge * 8 + (-7 if left else 7), 0),
                    textcoords="offset points", fontsize=6, va="center",
                    ha="right" if left else "left", color=colour)


# -- legend and layout ---------------------------------------------------------------------


def _proxy(lbl: str, h):
    if lbl == EXACT_LABEL:
        return Line2D([], [], ls="none", marker="*", ms=10, color="0.6", mec="black", mew=0.5)
    if lbl == NOISELESS_LABEL:
        return Line2D([], [], color="0.4", ls=":", lw=1)
    return h


def shared_legend(fig, axes, title: Optional[str] = None, fontsize: float = 7):
    """One legend for the whole figure, right of the panels: every labelled artist of ``axes``
    once (schemes in the registry's order, then the rest as first drawn). Needs a figure made
    with ``layout="constrained"``."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lbl, h)
    schemes = sorted((lbl for lbl in seen if base_name(split_label(lbl)[0]) in SCHEMES),
                     key=_sort_key)
    labels = schemes + [lbl for lbl in seen if lbl not in schemes]
    if not labels:
        return None
    ncol = 1 if len(labels) <= 22 else 2
    return fig.legend([_proxy(lbl, seen[lbl]) for lbl in labels], labels,
                      loc="outside right upper", fontsize=fontsize, ncol=ncol, title=title,
                      title_fontsize=fontsize, alignment="left", frameon=False)


def declutter(fig, texts: Sequence, step_pt: float = 2.0, rounds: int = 60) -> None:
    """Move annotations (``ax.annotate`` with ``textcoords="offset points"``) down until no two
    of ``texts`` overlap (at most ``rounds`` passes)."""
    texts = [t for t in texts if t.get_visible() and t.get_text()]
    if len(texts) < 2:
        return
    renderer = layout(fig)
    px = fig.dpi / 72
    for _ in range(rounds):
        moved = False
        boxes = [t.get_window_extent(renderer) for t in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if not _overlap(boxes[i], boxes[j]):
                    continue
                k = j if boxes[j].y0 <= boxes[i].y0 else i  # push the lower one down
                dx, dy = texts[k].xyann
                texts[k].xyann = (dx, dy - (min(boxes[i].y1, boxes[j].y1)
                                            - max(boxes[i].y0, boxes[j].y0)) / px - step_pt)
                boxes[k] = texts[k].get_window_extent(renderer)
                moved = True
        if not moved:
            return


def spread_markers(fig, lines: Sequence, size_pt: float = 5.5) -> None:
    """Set single markers that would cover each other side by side (a beeswarm): each
    one-point line of ``lines`` (of any axes of ``fig``), in order, keeps its place when it
    clears those of its axes placed before, else moves sideways by the smallest multiple of
    ``size_pt`` (right, then left) that does. The data are unchanged; only where the marker is
    drawn."""
    if len(lines) < 2:
        return
    layout(fig)  # the axes' size and limits first
    to_pt = 72 / fig.dpi
    placed: dict[object, list[tuple[float, float]]] = {}
    steps = [0] + [s * k for k in range(1, 40) for s in (1, -1)]
    for ln in lines:
        ax = ln.axes
        near = placed.setdefault(ax, [])
        px, py = ax.transData.transform((ln.get_xdata()[0], ln.get_ydata()[0])) * to_pt
        k = next((k for k in steps if all(math.hypot(px + k * size_pt - qx, py - qy) >= size_pt
                                           for qx, qy in near)), 0)
        near.append((px + k * size_pt, py))
        if k:
            ln.set_transform(ax.transData + ScaledTranslation(k * size_pt / 72, 0,
                                                              fig.dpi_scale_trans))


def layout(fig):
    """Place the axes of ``fig`` as saving it will (its layout engine, and every axes' autoscaled
    limits), without drawing it; returns the renderer that measures text."""
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        ax.get_xlim()  # brings the autoscaled view limits up to date
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    return renderer


def suptitle(fig, axes, text: str, fontsize: float = 10):
    """The figure's title, centred over the panels ``axes`` (not over the legend beside them),
    wrapped to their width."""
    t = fig.suptitle(text, fontsize=fontsize)
    renderer = layout(fig)
    boxes = [ax.get_position() for ax in axes]
    x0, x1 = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
    t.set_x((x0 + x1) / 2)
    width = t.get_window_extent(renderer).width
    room = (x1 - x0) * fig.bbox.width
    if width > room:
        t.set_text(textwrap.fill(text, max(20, int(len(text) * room / width) - 2)))
    return t


def _overlap(a, b, tol: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


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


def channel_title(kind: str) -> str:
    return kind.upper() if kind == "awgn" else kind.capitalize()


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
