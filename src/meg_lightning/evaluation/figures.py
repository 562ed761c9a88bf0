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

A figure whose inputs are missing is skipped with a note (printed and returned).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from meg_lightning.config import MegConfig  # noqa: E402
from meg_lightning.io import atomic_path  # noqa: E402

FORMATS = ("png", "pdf")
FIG10_COLUMNS = ("p_max_mw", "policy", "fid", "psnr", "latent_mse", "n_images")


def label(row: dict) -> str:
    """Legend label of a row's scheme, e.g. ``meg fc=0.5`` (just the scheme when fc is empty)."""
    fc = row.get("fc")
    return f"{row['scheme']} fc={float(fc):g}" if _finite(fc) else str(row["scheme"])


def _sort_key(lbl: str) -> tuple:
    from meg_lightning.evaluation.registry import order

    scheme, _, fc = lbl.partition(" fc=")
    return (order(scheme), float(fc) if fc else 0.0)


def fid_label(rows: list[dict]) -> str:
    kinds = {str(r.get("fid_features")) for r in rows if r.get("fid_features")}
    if kinds == {"inception"}:
        return "FID (Inception-v3)"
    if kinds:
        return f"{' / '.join(sorted(kinds))} (not Inception FID)"
    return "FID"


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
    return [c for c in ("awgn", "rayleigh") if any(r["channel"] == c for r in rows)]


LINESTYLES = {"linear": "--", "digital": ":"}  # more than 10 lines: the colours repeat
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
                              ls=LINESTYLES.get(lbl.partition(" ")[0], "-"))
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


def fig_heatmap(rows: list[dict], metric: str, path_stem: Path, scheme: str = "meg") -> list[Path]:
    """Figs. 8-9: ``metric`` of ``scheme`` over compression rate fc (x) and SNR (y)."""
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
    from PIL import Image

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


def read_fig10(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("p_max_mw", "policy", "fid") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(FIG10_COLUMNS)}")
    return rows


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


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


def compute_snrs(rows: list[dict], channel: str = "awgn") -> list[float]:
    """The SNRs of the quality-vs-UE-compute figure: -10, 0 and 10 dB when swept, else up to
    three swept SNRs spread over the range."""
    snrs = sorted({float(r["snr_db"]) for r in rows if r["channel"] == channel
                   and r.get("ue_gflops") is not None and math.isfinite(float(r["snr_db"]))})
    pick = [s for s in (-10.0, 0.0, 10.0) if s in snrs]
    return pick or snrs[:: max(1, len(snrs) // 3)][:3]


def fig_compute(rows: list[dict], out: Path) -> list[Path]:
    """Quality (PSNR; on mini also semantic accuracy) against UE GFLOPs per image, AWGN, a few
    SNRs: ``fig_compute_psnr`` and ``fig_compute_semantic`` (evaluation.figure_compute)."""
    from meg_lightning.evaluation.figure_compute import plot_quality_vs_compute

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
    """Test latent MSE against SNR of the analog latent codes (`meg`, `meg-adaptive`, `linear`)
    per channel and rate, with the Gaussian OPTA bound of each rate on AWGN (black, dotted).
    Nothing unless `meg-adaptive` and another code were swept."""
    from meg_lightning.evaluation.tradeoff import CODEC_SCHEMES

    rows = [r for r in rows if r["scheme"] in CODEC_SCHEMES and _finite(r.get("latent_mse"))
            and r["channel"] != "none"]
    if len({r["scheme"] for r in rows}) < 2 or not any(r["scheme"] == "meg-adaptive" for r in rows):
        return []
    kinds = _channels(rows)
    styles = {"meg": ":", "meg-adaptive": "-", "linear": "--"}
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
            if pts[0]["scheme"] == "meg-adaptive" and opta:
                ax.semilogy(*zip(*opta), color="k", ls=":", lw=1,
                            label=f"OPTA fc={fc:g}" if kind == "awgn" else None)
        ax.set_title(kind.upper() if kind == "awgn" else kind.capitalize())
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test latent MSE per entry, lower is better")
    fig.suptitle("Learned codecs against the optimal linear code and the Gaussian OPTA bound "
                 "(colour: rate; dotted: meg, paper recipe; solid: meg-adaptive; dashed: linear; "
                 "black dotted: OPTA on AWGN)",
                 fontsize=9)
    axes[0][-1].legend(fontsize=7)
    return save(fig, path_stem)


def make_figures(results_csv: Optional[Path], examples: Optional[Path], ppo_csv: Optional[Path],
                 out: Path, *, table2: bool = True) -> tuple[list[Path], list[str]]:
    """Every figure whose inputs exist; returns (written paths, notes on what was skipped)."""
    from meg_lightning.evaluation.results import read_results

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
        from meg_lightning.evaluation.table2 import table2 as make_table2
        from meg_lightning.evaluation.table2 import write_table2

        paths += write_table2(make_table2(), out)
    return paths, notes


def preset_table2(cfg: MegConfig, out: Path) -> list[Path]:
    """Table II for the configured model too, when it can be built offline (the tiny preset):
    its image and latent shapes (f_d from the VAE config), its generator and ``codec.arch``."""
    if cfg.model != "tiny":
        return []
    from meg_lightning.evaluation.table2 import pipeline_params, table2, write_table2
    from meg_lightning.generation import latent_shape
    from meg_lightning.generation.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    g = cfg.generation
    rows = table2((3, g.height, g.width), latent_shape(pipe, g), arch=cfg.codec.arch,
                  hidden=cfg.codec.hidden, generator_params=pipeline_params(pipe))
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
