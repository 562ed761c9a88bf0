"""`meg figures`: every figure and Table II, regenerated from saved results (nothing recomputed).

Reads ``{out_dir}/eval/<eval.results>`` (written by `meg eval`), ``{out_dir}/eval/examples/``
and ``{out_dir}/ppo/fig10.csv`` (written by `meg train-ppo`); writes PNG and PDF files to
``{out_dir}/figures/``:

- ``fig5_examples``: the first test image for every scheme (rows) and SNR (columns), AWGN;
- ``grid_<channel>_snr<s>``: image grids, the first test images (columns) of I_0 and of every
  scheme (rows) at a few SNRs (-10, 0 and 10 dB when swept);
- ``fig6_psnr`` / ``fig7_fid``: PSNR and FID against SNR per scheme, one panel per channel kind
  (the FID panel shades the bootstrap interval; a dotted line marks a scheme's value over the
  noiseless channel when the sweep included ``none``; identical images are "exact" stars beyond
  the clipped axis, not 100 dB);
- ``fig_semantic``: semantic accuracy against SNR (model ``mini``: the share of images whose
  attributes all still match the prompt; dashed: I_0);
- ``fig8_psnr_fc`` / ``fig9_fid_fc``: heatmaps of the `meg` scheme's PSNR and FID over fc x SNR;
- ``fig_compute_psnr`` / ``fig_compute_semantic``: quality against UE GFLOPs per image with the
  Pareto frontier; ``fig_codecs``: the analog latent codes against the OPTA bound;
- ``fig10_fid_power``: FID, PSNR and semantic accuracy against the power budget per power policy,
  with 95% bands;
- ``table2.csv`` / ``table2.md``: Table II for the SD-v1.5 shapes (:mod:`.table2`), and
  ``table2_tiny.*`` for the tiny preset when that is the configured model.

Every plot shares one style (:mod:`.figures_common`): a scheme family keeps its registered hue in
every figure, the rate fc is the marker and line style, one legend per figure names every
series. Fig. 10 and the other trade-off figures (``fig_compute_*``, ``fig_codecs``) are in
:mod:`.figures_tradeoff`. A figure whose inputs are missing is skipped with a note (printed and
returned).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image

from meg_lightning.channels import CHANNELS  # noqa: E402
from meg_lightning.config import MegConfig  # noqa: E402
from meg_lightning.evaluation.figures_common import (  # noqa: E402
    NOISELESS_LABEL,
    Style,
    _channels,
    _finite,
    _sort_key,
    channel_title,
    declutter,
    exact_axis,
    exact_star,
    label,
    save,
    shared_legend,
    shown_value,
    suptitle,
    value_range,
)
from meg_lightning.evaluation.figures_tradeoff import (  # noqa: E402
    fig_codecs,
    fig_compute,
    fig_power,
    read_fig10,
)
from meg_lightning.evaluation.results import read_results
from meg_lightning.evaluation.table2 import pipeline_params, table2, write_table2
from meg_lightning.evaluation.table2 import table2 as make_table2
from meg_lightning.generation import latent_shape
from meg_lightning.generation.tiny import build_tiny_pipeline
from meg_lightning.schemes import with_role  # noqa: E402


def fid_label(rows: list[dict]) -> str:
    kinds = {str(r.get("fid_features")) for r in rows if r.get("fid_features")}
    if kinds == {"inception"}:
        return "FID (Inception-v3)"
    if kinds:
        return f"{' / '.join(sorted(kinds))} (not Inception FID)"
    return "FID"


METRIC_NAMES = {"psnr_db": "PSNR", "fid": "FID", "semantic_accuracy": "Semantic accuracy"}


def fig_vs_snr(rows: list[dict], metric: str, path_stem: Path) -> list[Path]:
    """Figs. 6-7: ``metric`` (psnr_db | fid | semantic_accuracy) against SNR, one panel per
    channel kind (:func:`draw_vs_snr`). Nothing when no row has a finite value of ``metric``."""
    fig = draw_vs_snr(rows, metric)
    return [] if fig is None else save(fig, path_stem)


def draw_vs_snr(rows: list[dict], metric: str):
    """The figure of :func:`fig_vs_snr` (None when there is nothing to plot), in the style of
    :mod:`.figures_common`: one line per scheme and rate, coloured by scheme family, marked by
    rate; identical images as "exact" stars in a strip beyond the clipped axis (PSNR: above,
    FID: below); the FID bootstrap interval as a band; a dotted line at a scheme's value over the
    noiseless channel when the sweep included it; one legend for the figure."""

    kinds = _channels(rows)
    if not kinds or not any(_finite(r.get(metric)) for r in rows if r["channel"] in kinds):
        return None
    style = Style.from_rows(rows)
    series: dict[str, dict[str, list[tuple]]] = {k: defaultdict(list) for k in kinds}
    refs: dict[str, tuple] = {}  # label -> (value or None when exact, share) on the noiseless channel
    for r in rows:
        if r.get(metric) is None:
            continue
        v, share = shown_value(r, metric)
        if v is not None and not math.isfinite(v):
            continue
        if r["channel"] in CHANNELS and CHANNELS[r["channel"]].noiseless:
            refs[label(r)] = (v, share)
        elif r["channel"] in series and _finite(r.get("snr_db")):
            lo, hi = ((_num(r.get("fid_ci_low")), _num(r.get("fid_ci_high"))) if metric == "fid"
                      else (math.nan, math.nan))
            series[r["channel"]][label(r)].append((float(r["snr_db"]), v, share, lo, hi))
    ceiling = max((float(r["semantic_accuracy_ref"]) for r in rows
                   if metric == "semantic_accuracy" and _finite(r.get("semantic_accuracy_ref"))),
                  default=None)

    points = [p for s in series.values() for pts in s.values() for p in pts]
    main = [p[1] for p in points if p[1] is not None] + [v for v, _ in refs.values()
                                                          if v is not None]
    values = main + [p[k] for p in points if p[1] is not None for k in (3, 4)]
    values += [ceiling] if ceiling is not None else []
    exact = any(p[2] > 0 for p in points) or any(sh > 0 for _, sh in refs.values())
    # FID spans decades (and an all-identical set is 0: drawn as exact): a log axis then
    log = metric == "fid" and bool(main) and min(main) > 0 and max(main) / min(main) > 50
    lo, hi = value_range(values, log=log)

    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds) + 2.8, 4.2), squeeze=False,
                             sharey=True, layout="constrained")
    y_exact = exact_axis(axes[0], lo, hi, strip=exact, top=metric != "fid", log=log)
    floor = lo / 10 ** (0.06 * math.log10(hi / lo)) if log else lo  # a band reaching 0 stops here
    notes = []
    for ax, kind in zip(axes[0], kinds):
        stars: dict[float, list[tuple]] = defaultdict(list)
        for lbl in sorted(series[kind], key=_sort_key):
            pts = sorted(series[kind][lbl])
            x = np.array([p[0] for p in pts])
            y = np.array([y_exact if p[1] is None else p[1] for p in pts], dtype=float)
            kw = style.line(lbl)
            ax.plot(x, y, **kw)
            for p in pts:
                if p[2] > 0:
                    stars[p[0]].append((lbl, p[2]))
            band = np.array([[p[0], max(p[3], floor) if log else p[3], p[4]] for p in pts
                             if p[1] is not None and _finite(p[3]) and _finite(p[4])])
            if len(band):
                ax.fill_between(band[:, 0], band[:, 1], band[:, 2], color=kw["color"],
                                alpha=0.12, lw=0, label="_interval")
            if lbl in refs:  # the same scheme over the noiseless channel, dotted
                v, _ = refs[lbl]
                ax.axhline(y_exact if v is None else v, color=kw["color"], ls=":", lw=1,
                           label=NOISELESS_LABEL)
        xs = [p[0] for pts in series[kind].values() for p in pts]
        for x0, got in stars.items():
            for i, (lbl, share) in enumerate(got):
                exact_star(ax, x0, y_exact, style.colour(lbl), share, dodge=i - (len(got) - 1) / 2,
                           left=x0 > (min(xs) + max(xs)) / 2)
        if ceiling is not None:  # the ceiling: the perfect images I_0
            ax.axhline(ceiling, color="k", ls="--", lw=1, label="$I_0$ (no channel)")
        ax.set_title(channel_title(kind))
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
        notes += [t for t in ax.texts]
    ylabel = {"psnr_db": "PSNR (dB), higher is better",
              "semantic_accuracy": "all attributes match the prompt (share), higher is better"
              }.get(metric, f"{fid_label(rows)}, lower is better")
    if metric == "psnr_db" and any(0 < p[2] < 1 for s in series.values() for pts in s.values()
                                   for p in pts):
        ylabel += "\n(partly exact cells: mean over the other images)"
    axes[0][0].set_ylabel(ylabel)
    n = sorted({r.get("n_images") for r in rows if r.get("n_images") is not None})
    extra = "; bands: bootstrap interval" if metric == "fid" and any(
        _finite(r.get("fid_ci_low")) for r in rows) else ""
    labels = [lbl for s in series.values() for lbl in s]
    shared_legend(fig, axes[0], title=style.legend_title(labels))
    suptitle(fig, axes[0], f"{METRIC_NAMES.get(metric, metric)} against SNR "
             f"({'/'.join(str(v) for v in n)} images per point{extra})")
    declutter(fig, notes)
    return fig


def _num(v) -> float:
    return float(v) if _finite(v) else math.nan


def fig_heatmap(rows: list[dict], metric: str, path_stem: Path,
                scheme: Optional[str] = None) -> list[Path]:
    """Figs. 8-9: ``metric`` of ``scheme`` (default: the paper's proposed scheme) over
    compression rate fc (x) and SNR (y)."""

    scheme = scheme or with_role("proposed")[0]
    rows = [r for r in rows if r["scheme"] == scheme and r.get("fc") is not None
            and r.get(metric) is not None and math.isfinite(float(r["snr_db"]))]
    kinds = _channels(rows)
    if not kinds:
        return []
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.6 * len(kinds), 4), squeeze=False,
                             layout="constrained")  # keeps each colour bar off the next panel
    for ax, kind in zip(axes[0], kinds):
        sub = [r for r in rows if r["channel"] == kind]
        fcs = sorted({float(r["fc"]) for r in sub})
        snrs = sorted({float(r["snr_db"]) for r in sub})
        grid = np.full((len(snrs), len(fcs)), np.nan)
        for r in sub:
            grid[snrs.index(float(r["snr_db"])), fcs.index(float(r["fc"]))] = float(r[metric])
        im = ax.imshow(grid, origin="lower", aspect="auto",
                       cmap="viridis" if metric == "psnr_db" else "viridis_r")
        ax.set_xticks(range(len(fcs)), [f"{f:g}" for f in fcs])
        ax.set_yticks(range(len(snrs)), [f"{s:g}" for s in snrs])
        ax.set_xlabel("compression rate $f_c$")
        ax.set_ylabel("SNR (dB)")
        ax.set_title(f"{scheme}, {kind}")
        fig.colorbar(im, ax=ax, label="PSNR (dB)" if metric == "psnr_db" else fid_label(rows))
    return save(fig, path_stem)


def _tiles(path: Path, n: Optional[int] = None) -> np.ndarray:
    """The first ``n`` square tiles (all when None) of an example strip, side by side (H, n H, 3)."""

    strip = np.asarray(Image.open(path).convert("RGB"))
    h = strip.shape[0]
    return strip if n is None else strip[:, :n * h]


def fig_examples(rows: list[dict], examples: Path, path_stem: Path,
                 channel: str = "awgn") -> list[Path]:
    """Fig. 5: the first test image per scheme (rows) and SNR (columns), beside I_0."""

    sub = [r for r in rows if r["channel"] == channel and (examples / f"{r['cell']}.png").is_file()]
    ref = examples / "reference.png"
    if not sub or not ref.is_file():
        return []
    labels = sorted({label(r) for r in sub}, key=_sort_key)
    snrs = sorted({float(r["snr_db"]) for r in sub})
    cell = {(label(r), float(r["snr_db"])): r["cell"] for r in sub}
    fig, axes = plt.subplots(len(labels), len(snrs) + 1, squeeze=False,
                             figsize=(1.4 * (len(snrs) + 1), 1.5 * len(labels)),
                             layout="constrained")  # the title sits on the grid, not above a gap
    for i, lbl in enumerate(labels):
        axes[i][0].imshow(_tiles(ref, 1))
        axes[i][0].set_ylabel(lbl, fontsize=7)
        for j, snr in enumerate(snrs):
            key = cell.get((lbl, snr))
            if key:
                axes[i][j + 1].imshow(_tiles(examples / f"{key}.png", 1))
            if i == 0:
                axes[i][j + 1].set_title(f"{snr:g} dB", fontsize=7)
    axes[0][0].set_title("$I_0$", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Generated images per scheme and SNR ({channel})", fontsize=9)
    return save(fig, path_stem)


GRID_SNRS = (-10.0, 0.0, 10.0)


def fig_grid(rows: list[dict], examples: Path, path_stem: Path, channel: str,
             snr_db: float) -> list[Path]:
    """An image grid: the saved test images (columns) of I_0 and of every scheme (rows) at one
    channel kind and SNR, each row labelled with its PSNR and, when measured, semantic accuracy."""

    sub = [r for r in rows if r["channel"] == channel and _finite(r.get("snr_db"))
           and math.isclose(float(r["snr_db"]), snr_db)
           and (examples / f"{r['cell']}.png").is_file()]
    ref = examples / "reference.png"
    if not sub or not ref.is_file():
        return []
    sub.sort(key=lambda r: _sort_key(label(r)))
    strips = [("$I_0$ (no channel)", _tiles(ref))]
    for r in sub:
        text = f"{label(r)}\n{float(r['psnr_db']):.1f} dB"
        if _finite(r.get("semantic_accuracy")):
            text += f", acc {float(r['semantic_accuracy']):.2f}"
        strips.append((text, _tiles(examples / f"{r['cell']}.png")))
    width = min(s.shape[1] for _, s in strips)
    height = strips[0][1].shape[0]
    dpi = 100  # the tiles at about their own pixel size: noisy images compress badly
    fig, axes = plt.subplots(len(strips), 1, squeeze=False, layout="constrained",
                             figsize=(1.6 + width / dpi, (height / dpi + 0.12) * len(strips)))
    for ax, (text, strip) in zip(axes[:, 0], strips):
        ax.imshow(strip[:, :width])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(text, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"{channel.upper() if channel == 'awgn' else channel.capitalize()}, "
                 f"{snr_db:g} dB SNR: the same test images through every scheme", fontsize=8)
    return save(fig, path_stem, dpi=dpi)


def grid_snrs(rows: list[dict]) -> list[float]:
    """The grid SNRs (``GRID_SNRS``) present in the sweep, else its median SNR."""

    swept = sorted({float(r["snr_db"]) for r in rows if _finite(r.get("snr_db"))})
    got = [s for s in GRID_SNRS if any(math.isclose(s, x) for x in swept)]
    return got or swept[len(swept) // 2:len(swept) // 2 + 1]


def make_figures(results_csv: Optional[Path], examples: Optional[Path], ppo_csv: Optional[Path],
                 out: Path, *, table2: bool = True) -> tuple[list[Path], list[str]]:
    """Every figure whose inputs exist; returns (written paths, notes on what was skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    notes: list[str] = []
    if results_csv is not None and results_csv.is_file():
        rows = read_results(results_csv)
        for name, fn in (("fig6_psnr", lambda p: fig_vs_snr(rows, "psnr_db", p)),
                         ("fig7_fid", lambda p: fig_vs_snr(rows, "fid", p)),
                         ("fig_semantic", lambda p: fig_vs_snr(rows, "semantic_accuracy", p)),
                         ("fig_codecs", lambda p: fig_codecs(rows, p)),
                         ("fig8_psnr_fc", lambda p: fig_heatmap(rows, "psnr_db", p)),
                         ("fig9_fid_fc", lambda p: fig_heatmap(rows, "fid", p)),
                         ("fig5_examples", lambda p: fig_examples(rows, examples or Path(), p))):
            got = fn(out / name)
            paths += got
            if not got and name not in ("fig_semantic", "fig_codecs"):  # mini / adaptive only
                notes.append(f"{name}: skipped (no matching rows / example images in "
                             f"{results_csv.parent})")
        paths += fig_compute(rows, out)
        for kind in _channels(rows):
            for snr in grid_snrs([r for r in rows if r["channel"] == kind]):
                paths += fig_grid(rows, examples or Path(), out / f"grid_{kind}_snr{snr:g}",
                                  kind, snr)
    else:
        notes.append(f"figs 5-9: skipped, no results at {results_csv} (run `meg eval` first)")
    if ppo_csv is not None and ppo_csv.is_file():
        got = fig_power(read_fig10(ppo_csv), out / "fig10_fid_power")
        paths += got
        if not got:
            notes.append(f"fig10_fid_power: skipped, {ppo_csv} has no rows")
    else:
        notes.append(f"fig10_fid_power: skipped, no {ppo_csv} (written by `meg train-ppo`)")
    if table2:
        paths += write_table2(make_table2(), out)
    return paths, notes


def preset_table2(cfg: MegConfig, out: Path) -> list[Path]:
    """Table II for the configured model too, when it can be built offline (the tiny preset):
    its image and latent shapes (f_d from the VAE config), its generator and ``codec.arch``."""
    if cfg.model != "tiny":
        return []

    pipe = build_tiny_pipeline()
    g = cfg.generation
    arch = cfg.codec.arch
    rows = table2((3, g.height, g.width), latent_shape(pipe, g), arch=arch,
                  settings=getattr(cfg.codec, arch, None), generator_params=pipeline_params(pipe))
    return write_table2(rows, out, name="table2_tiny")


def main(cfg: MegConfig) -> list[Path]:
    """`meg figures`: regenerate every figure under ``{out_dir}/figures`` from saved results."""

    root = Path(cfg.out_dir)
    paths, notes = make_figures(root / "eval" / cfg.eval.results, root / "eval" / "examples",
                                root / "ppo" / "fig10.csv", root / "figures")
    paths += preset_table2(cfg, root / "figures")
    for n in notes:
        print(f"meg figures: {n}")
    print(f"meg figures: wrote {len(paths)} files to {root / 'figures'}")
    return paths
