"""`meg figures`: every figure and Table II, regenerated from saved results (nothing recomputed).

Reads ``{out_dir}/eval/<eval.results>`` (written by `meg eval`), ``{out_dir}/eval/examples/``
and ``{out_dir}/ppo/fig10.csv`` (written by `meg train-ppo`); writes PNG and PDF files to
``{out_dir}/figures/``:

- ``fig5_examples``: the first test image for every scheme (rows) and SNR (columns), AWGN;
- ``grid_<channel>_snr<s>``: image grids, the first test images (columns) of I_0 and of every
  scheme (rows) at a few SNRs (-10, 0 and 10 dB when swept);
- ``fig6_psnr`` / ``fig7_fid``: PSNR and FID against SNR per scheme, one panel per channel kind
  (the FID panel shades the bootstrap interval; a dotted line marks a scheme's value over the
  noiseless channel when the sweep included ``none``);
- ``fig_semantic``: semantic accuracy against SNR (model ``mini``: the share of images whose
  attributes all still match the prompt; dashed: I_0);
- ``fig8_psnr_fc`` / ``fig9_fid_fc``: heatmaps of the `meg` scheme's PSNR and FID over fc x SNR;
- ``fig10_fid_power``: FID against the power budget per power-allocation policy;
- ``table2.csv`` / ``table2.md``: Table II for the SD-v1.5 shapes (:mod:`.table2`), and
  ``table2_tiny.*`` for the tiny preset when that is the configured model.

The shared helpers (labels, order, saving) are in :mod:`.figures_common`; Fig. 10 and the other
trade-off figures (``fig_compute_*``, ``fig_codecs``) in :mod:`.figures_tradeoff`. A figure whose
inputs are missing is skipped with a note (printed and returned).
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

from meg_lightning.config import MegConfig  # noqa: E402
from meg_lightning.evaluation.figures_common import (  # noqa: E402
    _channels,
    _finite,
    _sort_key,
    label,
    save,
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
from meg_lightning.schemes import names, scheme_class, with_role  # noqa: E402


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
    return save(fig, path_stem)


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
