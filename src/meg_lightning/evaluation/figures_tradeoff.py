"""The trade-off figures of `meg figures`: quality (FID, PSNR, semantic accuracy) against the power
budget per power policy (Fig. 10, from `meg train-ppo`'s ``fig10.csv``, new or old format),
quality against UE compute (:mod:`.figure_compute`) and the analog latent codes against the
Gaussian OPTA bound."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from meg_lightning.channels import CHANNELS  # noqa: E402
from meg_lightning.evaluation.figure_compute import (  # noqa: E402
    compute_snrs,
    draw_quality_vs_compute,
)
from meg_lightning.evaluation.figures_common import (  # noqa: E402
    Style,
    _channels,
    _finite,
    _sort_key,
    channel_title,
    label,
    save,
    shared_legend,
    suptitle,
)
from meg_lightning.evaluation.tradeoff import codec_schemes  # noqa: E402
from meg_lightning.power import POLICIES  # noqa: E402
from meg_lightning.schemes import SCHEMES  # noqa: E402

#: the metrics of ``fig10.csv``: each a column with its bootstrap interval ``<m>_lo``, ``<m>_hi``
FIG10_METRICS = ("fid", "psnr", "accuracy", "latent_mse")
#: the columns of ``{out_dir}/ppo/fig10.csv`` (`meg train-ppo`), one row per budget and policy;
#: ``power_saved_db``: how many dB less budget than equal power a policy needs for the same FID
#: (latent MSE without images), empty where it cannot be read off equal's curve. An older file
#: (p_max_mw, snr_db, policy, fid, psnr, latent_mse, expected_mse, n_images, scheme, reward: no
#: intervals, no accuracy, no block count) is read too
FIG10_COLUMNS = ("p_max_mw", "snr_db", "policy", "num_blocks", "channel", "scheme", "fc",
                 "reward", "n_images",
                 *(f"{m}{s}" for m in FIG10_METRICS for s in ("", "_lo", "_hi")),
                 "power_saved_db")
#: the columns a fig10.csv must have (and one metric)
FIG10_REQUIRED = ("p_max_mw", "policy")
#: text columns of fig10.csv; every other column is a number (nan when empty)
FIG10_TEXT = ("policy", "channel", "scheme", "reward")
#: the panels of Fig. 10: (metric, axis label); the first falls back to latent MSE without images
FIG10_PANELS = (("fid", "FID, lower is better"), ("psnr", "PSNR (dB), higher is better"),
                ("accuracy", "semantic accuracy, higher is better"))
#: colours of the policies by kind, each kind in the registry's order
CAUSAL_COLOURS = ("tab:gray", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink",
                  "tab:olive", "tab:cyan")
LEARNED_COLOURS = ("tab:red", "tab:orange", "magenta", "maroon")
ORACLE_COLOURS = ("black", "dimgray", "darkslategray")


def read_fig10(path: Path) -> list[dict]:
    """Rows of a Fig. 10 CSV (new or old format), numbers as floats (nan when empty), text as
    text; ValueError naming the missing columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames or []
    missing = [c for c in FIG10_REQUIRED if c not in fields]
    if fields and not any(m in fields for m in FIG10_METRICS):
        missing.append(" or ".join(FIG10_METRICS))
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(FIG10_COLUMNS)}")
    return [{k: (v or "") if k in FIG10_TEXT else _num(v) for k, v in r.items() if k is not None}
            for r in rows]


def _num(v) -> float:
    return float(v) if _finite(v) else math.nan


def policy_styles(names) -> dict[str, dict]:
    """Colour and line style of each policy, fixed by the registry (``POLICIES``, in its order):
    the non-causal ones (the oracle) black and dashed, the learned ones red / orange, the other
    causal ones grey, blue, green, ...; names the registry does not know follow, by name."""
    out: dict[str, dict] = {}
    counts = {"oracle": 0, "learned": 0, "causal": 0}
    palettes = {"oracle": ORACLE_COLOURS, "learned": LEARNED_COLOURS, "causal": CAUSAL_COLOURS}
    known = [(n, cls) for n, cls in POLICIES.items()]
    unknown = sorted(set(names) - {n for n, _ in known})
    for name, cls in known + [(n, None) for n in unknown]:
        kind = ("causal" if cls is None else "oracle" if not getattr(cls, "causal", True)
                else "learned" if getattr(cls, "learned", False) else "causal")
        pal = palettes[kind]
        colour = pal[counts[kind] % len(pal)]
        counts[kind] += 1
        text = name + (" (non-causal)" if kind == "oracle" else " (learned)"
                       if kind == "learned" else "")
        out[name] = {"color": colour, "ls": "--" if kind == "oracle" else "-", "label": text,
                     "rank": len(out)}
    return out


def _setting(r: dict) -> tuple:
    """(scheme, fc, channel, num_blocks) of a row as text ('' when the file has no such column)."""

    def text(v) -> str:
        if isinstance(v, float):
            return f"{v:g}" if math.isfinite(v) else ""
        return str(v or "")

    return tuple(text(r.get(k)) for k in ("scheme", "fc", "channel", "num_blocks"))


def _setting_text(key: tuple) -> str:
    scheme, fc, channel, blocks = key
    parts = [f"{scheme} fc={fc}" if scheme and fc else scheme, channel,
             f"B={blocks} blocks" if blocks else ""]
    return ", ".join(p for p in parts if p)


def fig10_setting(rows: list[dict]) -> tuple[tuple, list[tuple]]:
    """The setting (scheme, fc, channel, num_blocks; :func:`_setting`) Fig. 10 draws when the
    file holds several (e.g. a sweep over block counts B): the one with the most rows, ties to
    the most budgets, then the first in sorted order. Returns (it, the others)."""
    count: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        count[_setting(r)].append(r)
    ranked = sorted(count, key=lambda k: (-len(count[k]),
                                          -len({r["p_max_mw"] for r in count[k]}), k))
    return ranked[0], ranked[1:]


def _saved_text(rows: list[dict]) -> str:
    """The range of a policy's ``power_saved_db`` over the budgets, e.g. ``0.2 to 0.6 dB``
    ('' when the file has none)."""
    got = sorted(float(r["power_saved_db"]) for r in rows if _finite(r.get("power_saved_db")))
    if not got:
        return ""
    lo, hi = got[0], got[-1]
    return f"{lo:+.1f} dB" if round(lo, 1) == round(hi, 1) else f"{lo:+.1f} to {hi:+.1f} dB"


def _snr_axis(ax, offset_db: float) -> None:
    """A top axis on ``ax`` (P_max in mW, log) that reads the average SNR in dB,
    ``10 log10(P_max) + offset_db``: ticks at whole dB values."""
    ax.autoscale_view()
    lo, hi = (10 * math.log10(v) + offset_db for v in ax.get_xlim())
    dbs = [d for d in ticker.MaxNLocator(6, integer=True).tick_values(lo, hi) if lo <= d <= hi]
    top = ax.secondary_xaxis("top")  # the same log scale as the budget axis
    top.xaxis.set_major_locator(ticker.FixedLocator([10 ** ((d - offset_db) / 10) for d in dbs]))
    top.xaxis.set_major_formatter(ticker.FuncFormatter(
        lambda v, pos=None: f"{10 * math.log10(v) + offset_db:.0f}"))
    top.xaxis.set_minor_locator(ticker.NullLocator())
    top.set_xlabel("average SNR (dB)", fontsize=8)
    top.tick_params(labelsize=8)


def fig_power(rows: list[dict], path_stem: Path) -> list[Path]:
    """Fig. 10: quality against the power budget P_max (mW, log axis; the average SNR in dB on
    the top axis), one panel per metric (FID, PSNR, semantic accuracy: those the file has), one
    line per policy (colours :func:`policy_styles`; the non-causal oracle dashed) with its
    bootstrap interval as a band when the file has one (an old file: lines only). The legend
    gives each policy's ``power_saved_db`` over the budgets when the file has it.

    One setting is drawn: when the file holds several block counts B (or schemes, rates,
    channels), the one with the most rows (:func:`fig10_setting`); the title names the others.
    When the PPO stage ran on synthetic seeds (no images: FID ``nan``) the latent MSE is plotted
    instead, and the axis says so. Rows are those of :func:`read_fig10`."""
    rows = [r for r in rows if _finite(r.get("p_max_mw")) and float(r["p_max_mw"]) > 0]
    if not rows:
        return []
    setting, others = fig10_setting(rows)
    rows = [r for r in rows if _setting(r) == setting]
    first = "fid" if any(_finite(r.get("fid")) for r in rows) else "latent_mse"
    panels = [(first, "latent MSE, lower is better\n(no images: FID unavailable)")
              if first == "latent_mse" else FIG10_PANELS[0], *FIG10_PANELS[1:]]
    panels = [(m, text) for m, text in panels if any(_finite(r.get(m)) for r in rows)]
    if not panels:
        return []
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_policy[str(r["policy"])].append(r)
    styles = policy_styles(set(by_policy))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels) + 2.2, 3.9),
                             squeeze=False, layout="constrained")
    budgets = sorted({float(r["p_max_mw"]) for r in rows})
    offsets = [float(r["snr_db"]) - 10 * math.log10(float(r["p_max_mw"])) for r in rows
               if _finite(r.get("snr_db"))]
    same_snr_map = bool(offsets) and max(offsets) - min(offsets) < 0.01
    saved = {p: _saved_text(got) for p, got in by_policy.items()}
    intervals = False
    for ax, (metric, text) in zip(axes[0], panels):
        for policy in sorted(by_policy, key=lambda p: styles[p]["rank"]):
            pts = sorted((r for r in by_policy[policy] if _finite(r.get(metric))),
                         key=lambda r: float(r["p_max_mw"]))
            if not pts:
                continue
            st = styles[policy]
            lbl = st["label"] + (f", {saved[policy]}" if saved[policy] else "")
            ax.plot([float(r["p_max_mw"]) for r in pts], [float(r[metric]) for r in pts],
                    color=st["color"], ls=st["ls"], marker="o", ms=4, lw=1.4, label=lbl)
            band = [(float(r["p_max_mw"]), float(r[f"{metric}_lo"]), float(r[f"{metric}_hi"]))
                    for r in pts
                    if _finite(r.get(f"{metric}_lo")) and _finite(r.get(f"{metric}_hi"))]
            if band:
                intervals = True
                bx, blo, bhi = zip(*band)
                ax.fill_between(bx, blo, bhi, color=st["color"], alpha=0.12, lw=0,
                                label="_interval")
        ax.set_xscale("log")
        if len(budgets) <= 8:
            ax.xaxis.set_major_locator(ticker.FixedLocator(budgets))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, pos=None: f"{v:g}"))
        ax.set_xlabel("power budget $P_{max}$ (mW)")
        ax.set_ylabel(text)
        ax.grid(alpha=0.3)
        if same_snr_map:  # the budget's average SNR P_max / (B N0), on the top axis
            _snr_axis(ax, sorted(offsets)[len(offsets) // 2])
    n = sorted({f"{r['n_images']:g}" for r in rows if _finite(r.get("n_images"))
                and r["n_images"] > 0})
    what = f"{'/'.join(n)} images per point" if n else "synthetic seeds, no images"
    parts = [_setting_text(setting), what]
    if intervals:
        parts.append("bands: 95% intervals")
    if others:  # name what differs from the drawn setting
        parts.append("not drawn: " + "; ".join(
            _setting_text(tuple(o if o != s else "" for o, s in zip(k, setting)))
            or _setting_text(k) for k in others))
    title = "power policy"
    if any(saved.values()):
        title += ("\n(dB less budget than equal power\nfor the same "
                  f"{'FID' if first == 'fid' else 'latent MSE'})")
    shared_legend(fig, axes[0], title=title)
    suptitle(fig, axes[0], "Quality against the power budget per power policy ("
             + "; ".join(p for p in parts if p) + ")")
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
            paths += save(draw_quality_vs_compute(rows, snrs=snrs, metric=metric), out / name)
    return paths


def fig_codecs(rows: list[dict], path_stem: Path) -> list[Path]:
    """Test latent MSE against SNR of the analog latent codes with a rate (the learned codecs and
    the optimal linear code) per channel and rate, with the Gaussian OPTA bound of each rate on
    AWGN (black, thin, in the rate's line style). Colour: the code's family; marker and line
    style: the rate. Nothing unless the SNR-adaptive codec and another code were swept."""
    codes = codec_schemes()
    style = Style.from_rows(rows)  # every rate of the results: the same look as in the others
    rows = [r for r in rows if r["scheme"] in codes and _finite(r.get("latent_mse"))
            and not CHANNELS[r["channel"]].noiseless]
    lead = [s for s in codes if SCHEMES[s].snr_adaptive]
    if len({r["scheme"] for r in rows}) < 2 or not any(r["scheme"] in lead for r in rows):
        return []
    kinds = _channels(rows)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds) + 2.6, 4.2), squeeze=False,
                             sharey=True, layout="constrained")
    opta_done: set = set()
    for ax, kind in zip(axes[0], kinds):
        series: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["channel"] == kind:
                series[label(r)].append(r)
        for lbl in sorted(series, key=_sort_key):
            pts = sorted(series[lbl], key=lambda r: float(r["snr_db"]))
            ax.semilogy([float(r["snr_db"]) for r in pts], [float(r["latent_mse"]) for r in pts],
                        **style.line(lbl))
            fc = float(pts[0]["fc"])
            opta = [(float(r["snr_db"]), float(r["opta_latent_mse"])) for r in pts
                    if _finite(r.get("opta_latent_mse"))]
            if pts[0]["scheme"] in lead and opta and (kind, fc) not in opta_done:
                opta_done.add((kind, fc))
                ax.semilogy(*zip(*opta), color="k", ls=style.fc_style(fc)[1], lw=0.9,
                            label=f"OPTA bound fc={fc:g}")
        ax.set_title(channel_title(kind))
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test latent MSE per entry, lower is better")
    shared_legend(fig, axes[0], title=style.legend_title(list({label(r) for r in rows})))
    suptitle(fig, axes[0], "Learned codecs against the optimal linear code and the Gaussian "
             "OPTA bound (black: OPTA)")
    return save(fig, path_stem)
