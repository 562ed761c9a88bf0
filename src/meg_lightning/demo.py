"""`meg demo`: every stage end to end on the offline default, then a Markdown report.

1. cache latents for N prompts (``meg latents``);
2. train the codec at each demo compression rate (``meg train-codec``);
3. train PPO power control on the MEG seeds, and the Fig. 10 sweep (``meg train-ppo``);
4. evaluate every scheme over SNR x channel (``meg eval``), and regenerate the test images from
   their prompts with another noise seed (:func:`seed_reference`: how much the seed decides);
5. regenerate every figure (``meg figures``) and write ``{out_dir}/REPORT.md``;
6. with ``logger=wandb`` (the demo's default), log it all to one offline W&B run in
   ``{out_dir}/wandb`` (:func:`log_to_wandb`; ``logger=csv``: none).

Each stage is the same function its own command runs, so a rerun resumes each stage where it
stopped (finished stages are skipped). Settings a user passes (``meg demo key=value``) win over
the demo's short defaults (``configs/demo.yaml``), which keep the whole run to a few minutes on a
2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from meg_lightning.codecs import train as codec_train
from meg_lightning.codecs.store import codec_source
from meg_lightning.config import MegConfig, save_resolved
from meg_lightning.data import cache
from meg_lightning.data.prompts import get_prompts
from meg_lightning.errors import UserError
from meg_lightning.evaluation import figures, sweep, tradeoff
from meg_lightning.evaluation.cells import codec_fcs, scheme_fcs
from meg_lightning.evaluation.figures_common import label
from meg_lightning.evaluation.inputs import (
    _default_datamodule,
    _default_judge,
    test_latents,
)
from meg_lightning.evaluation.report import LINE_METRICS, line_series
from meg_lightning.evaluation.results import COLUMNS, read_results
from meg_lightning.evaluation.sweep import eval_dir
from meg_lightning.generation import (
    decode_latents,
    generate_latents,
    load_pipeline,
    resolve_device,
    seed_for,
)
from meg_lightning.io import atomic_write_json, atomic_write_text
from meg_lightning.loggers import (
    Curve,
    lightning_csv_curves,
    offline_run_dir,
    torchrl_csv_curves,
    wandb_run,
)
from meg_lightning.metrics.image import psnr_per_image
from meg_lightning.power import report as power_report
from meg_lightning.power import sweep as ppo_command
from meg_lightning.runtime import torch_threads
from meg_lightning.schemes import scheme_class, with_role

#: the demo's own defaults (``configs/demo.yaml``), under the command line's settings
DEFAULTS = "demo.yaml"


def _stage(name: str, fn, *args: Any) -> tuple[Any, float]:
    print(f"\n=== meg demo: {name} ===", flush=True)
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def _is_nan(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def _verdict(a: float, b: float) -> str:
    """Higher is better: "yes" when ``a`` beats ``b``, "tie" when equal (to print precision)."""
    return "tie" if abs(a - b) < 5e-3 else "yes" if a > b else "no"


def _interp(points: dict[float, float], x: float) -> Optional[float]:
    """Linear interpolation in x over the swept points; None outside their range."""
    xs = sorted(points)
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    return float(np.interp(x, xs, [points[k] for k in xs]))


def claim_schemes() -> list[str]:
    """The schemes of the paper's central claim: the proposed one and the latent benchmark."""
    return with_role("proposed") + with_role("latent")


def low_snr_claim(rows: list[dict], max_snr_db: float = 0.0,
                  schemes: Optional[Sequence[str]] = None) -> list[dict]:
    """The paper's central claim, cell by cell: at SNR <= ``max_snr_db``, does each of ``schemes``
    (default :func:`claim_schemes`, every fc) beat the pixel benchmark (``centralized``) on the
    same channel and SNR in PSNR and, where measured, in semantic accuracy? One dict per
    (channel, SNR, scheme) with the values of both and the verdicts ``psnr`` / ``sem`` ("yes",
    "no", "tie"; ``sem`` None without semantic accuracy).

    Equal SNR per symbol is the paper's comparison, but ``centralized`` sends every pixel: with
    ``symbols`` real symbols against the scheme's ``k`` it spends ``symbols / k`` times the energy
    per image. ``equal_energy_snr_db`` = SNR - 10 log10(symbols / k) is the SNR at which it would
    spend the same energy as the scheme; ``*_equal_energy`` are centralized's PSNR and semantic
    accuracy there, linearly interpolated between swept SNRs (None outside the sweep)."""
    schemes = claim_schemes() if schemes is None else list(schemes)
    pixels = with_role("pixels")
    central = {(r["channel"], float(r["snr_db"])): r for r in rows
               if r["scheme"] in pixels and not _is_nan(r.get("snr_db"))}
    curve: dict[tuple[str, str], dict[float, float]] = {}
    for (channel, snr), c in central.items():
        if math.isfinite(snr):
            for m in ("psnr_db", "semantic_accuracy"):
                if not _is_nan(c.get(m)):
                    curve.setdefault((channel, m), {})[snr] = float(c[m])
    out = []
    for r in rows:
        if r["scheme"] not in schemes or _is_nan(r.get("snr_db")):
            continue
        key = (r["channel"], float(r["snr_db"]))
        c = central.get(key)
        if c is None or key[1] > max_snr_db or math.isinf(key[1]):
            continue
        sem, sem_c = r.get("semantic_accuracy"), c.get("semantic_accuracy")
        has_sem = not (_is_nan(sem) or _is_nan(sem_c))
        d = {"channel": key[0], "snr_db": key[1], "scheme": label(r),
             "psnr_db": float(r["psnr_db"]), "psnr_centralized": float(c["psnr_db"]),
             "semantic_accuracy": float(sem) if has_sem else None,
             "semantic_centralized": float(sem_c) if has_sem else None,
             "psnr": _verdict(float(r["psnr_db"]), float(c["psnr_db"])),
             "sem": _verdict(float(sem), float(sem_c)) if has_sem else None,
             "equal_energy_snr_db": None, "psnr_equal_energy": None,
             "semantic_equal_energy": None}
        k, n_c = r.get("symbols"), c.get("symbols")
        if not (_is_nan(k) or _is_nan(n_c)) and float(k) > 0:
            snr_e = key[1] - 10 * math.log10(float(n_c) / float(k))
            d["equal_energy_snr_db"] = snr_e
            d["psnr_equal_energy"] = _interp(curve.get((key[0], "psnr_db"), {}), snr_e)
            if has_sem:
                d["semantic_equal_energy"] = _interp(
                    curve.get((key[0], "semantic_accuracy"), {}), snr_e)
        out.append(d)
    return sorted(out, key=lambda d: (d["channel"], d["snr_db"], d["scheme"]))


def _tally(verdicts: list[str]) -> str:
    return (f"better in {verdicts.count('yes')}, tied in {verdicts.count('tie')}, worse in "
            f"{verdicts.count('no')} of {len(verdicts)} cells")


def _header(cols: list[str], has_sem: bool) -> list[str]:
    """A Markdown table header, with the three semantic-accuracy columns when measured."""
    cols = cols + (["semantic acc.", "centralized", "better"] if has_sem else [])
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _claim_lines(rows: list[dict]) -> list[str]:
    claim = low_snr_claim(rows)
    if not claim:
        return []
    has_sem = any(c["sem"] is not None for c in claim)
    mark = {"yes": "yes", "tie": "tie", "no": "**no**"}
    lines = ["## The paper's central claim at low SNR", "",
             "Do `meg` (the learned seed) and `feature` (the uncompressed latent) beat "
             "`centralized` (the image sent pixel by pixel) at the same SNR, 0 dB and below? "
             "(tie: equal to two decimals)", "",
             *_header(["channel", "SNR", "scheme", "PSNR (dB)", "centralized", "better"], has_sem)]
    for c in claim:
        line = (f"| {c['channel']} | {c['snr_db']:g} dB | {c['scheme']} | {c['psnr_db']:.2f} | "
                f"{c['psnr_centralized']:.2f} | {mark[c['psnr']]} |")
        if has_sem:
            line += (f" {c['semantic_accuracy']:.2f} | {c['semantic_centralized']:.2f} | "
                     f"{mark[c['sem']]} |" if c["sem"] is not None else " | | |")
        lines.append(line)
    text = [f"**At equal SNR**, in PSNR the schemes are {_tally([c['psnr'] for c in claim])}."]
    sem = [c for c in claim if c["sem"] is not None]
    if sem:
        text.append(f"In semantic accuracy they are {_tally([c['sem'] for c in sem])}.")
    holds = all(c["psnr"] == "yes" and c["sem"] in (None, "yes") for c in claim)
    text.append("The claim holds in every low-SNR cell of this run." if holds else
                "So the claim does **not** hold in every low-SNR cell of this run (marked "
                "**no** / tie above).")
    lines += ["", " ".join(text), ""]
    fair = [c for c in claim if c["psnr_equal_energy"] is not None]
    if fair:
        lines += ["**At equal energy per image.** `centralized` sends every pixel "
                  f"({int(_symbols(rows, with_role('pixels')[0]))} real symbols per image here), "
                  "many times the symbols of a seed, so at the same SNR per symbol it spends that "
                  "many times the energy. Below, centralized is read at the SNR where it would "
                  "spend the scheme's energy (linearly interpolated between swept SNRs; cells "
                  "outside the sweep are left out):", "",
                  *_header(["channel", "SNR", "scheme", "equal-energy SNR", "PSNR", "centralized",
                            "better"], has_sem)]
        verdicts, sem_verdicts = [], []
        for c in fair:
            v = _verdict(c["psnr_db"], c["psnr_equal_energy"])
            verdicts.append(v)
            line = (f"| {c['channel']} | {c['snr_db']:g} dB | {c['scheme']} | "
                    f"{c['equal_energy_snr_db']:.1f} dB | {c['psnr_db']:.2f} | "
                    f"{c['psnr_equal_energy']:.2f} | {mark[v]} |")
            if has_sem and c["semantic_equal_energy"] is not None:
                sv = _verdict(c["semantic_accuracy"], c["semantic_equal_energy"])
                sem_verdicts.append(sv)
                line += (f" {c['semantic_accuracy']:.2f} | {c['semantic_equal_energy']:.2f} | "
                         f"{mark[sv]} |")
            elif has_sem:
                line += " | | |"
            lines.append(line)
        text = [f"At equal energy, in PSNR the schemes are {_tally(verdicts)}."]
        if sem_verdicts:
            text.append(f"In semantic accuracy they are {_tally(sem_verdicts)}.")
        lines += ["", " ".join(text), ""]
    return lines


def _symbols(rows: list[dict], scheme: str) -> float:
    """The symbols per image of ``scheme`` in the results (its first row with a count)."""
    return next((float(r["symbols"]) for r in rows
                 if r["scheme"] == scheme and not _is_nan(r.get("symbols"))), float("nan"))


SEED_REFERENCE = "seed_reference.json"  # in the eval folder


def seed_reference(cfg: MegConfig) -> dict:
    """How much the noise seed decides: each test image regenerated from its prompt alone.

    The first ``eval.num_images`` test prompts (the sweep's) are generated again with another
    noise seed (``seed_for(seed + 1, index)`` instead of the cached ``seed_for(seed, index)``) and
    compared with I_0 = D(z). This is what a UE that knows the prompt gets without receiving
    anything about z: a scheme must beat this PSNR to carry information the prompt does not. On
    SD-v1.5 it is low (another seed draws another picture); ``mini`` v2 is built to match that.
    Written to ``<eval dir>/seed_reference.json``.
    """
    z, index = test_latents(_default_datamodule(cfg), cfg.eval.num_images)
    pipe = load_pipeline(cfg, device=resolve_device(cfg.generation.device))
    prompts = get_prompts(cfg.data.prompts, cfg.data.num_prompts, cfg.data.prompt_column)
    bs = cfg.data.gen_batch_size
    idx = index.tolist()
    z_other = torch.cat([generate_latents(pipe, [prompts[i] for i in idx[s:s + bs]],
                                          [seed_for(cfg.seed + 1, i) for i in idx[s:s + bs]],
                                          cfg.generation).cpu()
                         for s in range(0, len(idx), bs)])  # (N, C, h, w)
    def decode(zz):
        return torch.cat([decode_latents(pipe.vae, zz[s:s + bs].to(pipe.device)).float().cpu()
                          for s in range(0, len(zz), bs)])

    i_0, i_other = decode(z), decode(z_other)  # (N, 3, H, W) in [0, 1]
    psnr, _ = psnr_per_image(i_other, i_0)
    judge = _default_judge(cfg)
    out = {"n_images": len(idx), "psnr_db": float(psnr.mean()),
           "semantic_accuracy": (float(judge(i_other, index).float().mean())
                                 if judge is not None else float("nan"))}
    atomic_write_json(eval_dir(cfg) / SEED_REFERENCE, out)
    return out


def _seed_lines(cfg: MegConfig, rows: list[dict]) -> list[str]:
    f = eval_dir(cfg) / SEED_REFERENCE
    if not f.exists():
        return []
    ref = json.loads(f.read_text())
    psnr = ref["psnr_db"]
    beat = sorted({(r["channel"], float(r["snr_db"])) for r in rows
                   if r["scheme"] in claim_schemes() and not _is_nan(r.get("psnr_db"))
                   and float(r["psnr_db"]) > psnr and not _is_nan(r.get("snr_db"))})
    lines = ["## How much the noise seed decides", "",
             f"Each of the {ref['n_images']} test images regenerated from its prompt alone, with "
             f"another noise seed: PSNR **{psnr:.2f} dB** against I_0"]
    if not _is_nan(ref.get("semantic_accuracy")):
        lines[-1] += f", semantic accuracy {ref['semantic_accuracy']:.2f}"
    lines[-1] += (". This is what a UE that knows the prompt gets without receiving anything "
                  "about z; a scheme above this PSNR carries what the prompt leaves to the seed.")
    if beat:
        lows = {}
        for channel, snr in beat:
            lows[channel] = min(lows.get(channel, snr), snr)
        lines[-1] += " The lowest swept SNR at which `meg` or `feature` beat it: " + ", ".join(
            f"{snr:g} dB ({channel})" for channel, snr in sorted(lows.items())) + "."
    return lines + [""]


def write_report(cfg: MegConfig, timings: dict[str, float]) -> Path:
    root = Path(cfg.out_dir)
    rows = read_results(eval_dir(cfg) / cfg.eval.results)
    lines = [f"# meg_lightning demo report (model={cfg.model})", "",
             "Generated by `make demo` / `meg demo`. Every number below comes from this run; the "
             "resolved config is `config.yaml` beside this file.", ""]
    if cfg.model == "tiny":
        lines += ["> The `tiny` preset has random weights: its images are noise, so these curves "
                  "check that every stage runs, not the paper's claims.", ""]
    if cfg.model == "mini":
        lines += ["> Model `mini`: the small text-to-image model this project trains and ships "
                  "(docs/MINI.md), 64x64 images of one coloured shape, 4x8x8 latents. FID here is "
                  "**mini-FID** (the shipped attribute classifier's features), not the Inception "
                  "FID of the paper; semantic accuracy is the share of images whose five "
                  "attributes (shape, colour, background, size, position) all still match the "
                  "prompt, judged by the same classifier. Absolute numbers do not transfer to "
                  "SD-v1.5; the comparison between schemes at equal SNR is the point.", ""]
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += [f"| total | {sum(timings.values()):.1f} |"]
    lines.append("")
    lines += _claim_lines(rows)
    lines += _seed_lines(cfg, rows)
    lines += tradeoff.codec_lines(rows)
    lines += tradeoff.dm_lines(rows) + tradeoff.prompt_lines(rows) + tradeoff.digital_lines(rows)
    lines += tradeoff.compute_lines(rows)
    snrs = sorted({r["snr_db"] for r in rows})
    fid_name = rows[0].get("fid_features") if rows else None
    metrics = [("psnr_db", "PSNR (dB)"), ("fid", "FID" if fid_name in (None, "inception")
                                          else f"{fid_name} (not Inception FID)")]
    if any(not _is_nan(r.get("semantic_accuracy")) for r in rows):
        metrics.append(("semantic_accuracy", "Semantic accuracy"))
    names = [t.split(" (")[0] for _, t in metrics]
    names[-1] = names[-1].lower() if metrics[-1][0] == "semantic_accuracy" else names[-1]
    lines += [f"## {', '.join(names[:-1])} and {names[-1]} against SNR", ""]
    for channel in sorted({r["channel"] for r in rows}):
        for metric, title in metrics:
            lines += [f"### {title}, {channel}", "",
                      "| scheme | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
                      "|---|" + "---|" * len(snrs)]
            labels = sorted({(r["scheme"], r.get("fc")) for r in rows if r["channel"] == channel},
                            key=str)
            for scheme, fc in labels:
                cells = {r["snr_db"]: r.get(metric) for r in rows
                         if r["channel"] == channel and r["scheme"] == scheme and r.get("fc") == fc}
                name = label({"scheme": scheme, "fc": fc})
                lines.append(f"| {name} | " + " | ".join(_fmt(cells.get(s, "")) for s in snrs) + " |")
            lines.append("")
    if rows:
        n = rows[0].get("n_images")
        lines += [f"FID over {n} images per cell ({rows[0].get('fid_features', 'features')}); "
                  "the CSV has bootstrap confidence intervals. PSNR of identical images is "
                  f"capped at {rows[0].get('psnr_cap_db')} dB.", ""]
        ref = rows[0].get("semantic_accuracy_ref")
        if not _is_nan(ref):
            lines += [f"Semantic accuracy of the perfect images I_0 (no channel, the ceiling): "
                      f"{float(ref):.3f} over the same {n} test prompts.", ""]
    lines += power_report.markdown(root, cfg.ppo.channel.capitalize())
    figs = sorted((root / "figures").glob("*.png"))
    grids = [f for f in figs if f.stem.startswith("grid_")]
    if grids:
        lines += ["## Image grids", "", "The same test images (columns) through every scheme "
                  "(rows), with each row's PSNR and, for `mini`, semantic accuracy over all "
                  "test images of the cell.", ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in grids]
        lines.append("")
    figs = [f for f in figs if f not in grids]
    if figs:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in figs]
        lines.append("")
    table2 = root / "figures" / "table2.md"
    if table2.exists():
        lines += [table2.read_text(), ""]
    path = root / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _newest(folders: Sequence[Path]) -> Optional[Path]:
    return max(folders, key=lambda p: p.stat().st_mtime, default=None)


def _series(curves: dict[str, Curve], title: str, xname: str) -> Any:
    """A W&B line plot: one line per run of ``curves`` (run -> points)."""
    import wandb  # noqa: PLC0415 - heavy: imported only when a W&B run is written

    keys = sorted(curves)
    return wandb.plot.line_series(xs=[[x for x, _ in curves[k]] for k in keys],
                                  ys=[[y for _, y in curves[k]] for k in keys], keys=keys,
                                  title=title, xname=xname)


def log_to_wandb(cfg: MegConfig, timings: Optional[dict[str, float]] = None) -> Optional[Path]:
    """One W&B run ``demo`` of the whole demo, in ``{out_dir}/wandb`` (offline unless
    ``wandb.mode`` / ``WANDB_MODE`` say otherwise), built from the files the stages wrote:

    - ``eval/<metric>_<channel>``: PSNR, FID, latent NMSE and semantic accuracy against SNR, one
      line per scheme and rate (as `meg eval` logs them), and the table ``eval/results``;
    - ``figures/<name>``: every figure PNG of ``{out_dir}/figures``;
    - ``codec/<metric>``: the codec's training and validation curves (its CSV log), one line per
      trained rate;
    - ``ppo/<metric>``: PPO's learning curves (its CSV log), one line per run (the main run,
      Fig. 10's budgets, the block-count table's counts);
    - summary ``seconds/<stage>``: the stage timings.

    Returns the offline run's folder (``wandb sync`` uploads it), None online or disabled."""
    import wandb  # noqa: PLC0415 - heavy: imported only when a W&B run is written

    root = Path(cfg.out_dir)
    logs: dict[str, Any] = {}
    results = eval_dir(cfg) / cfg.eval.results
    rows = read_results(results) if results.is_file() else []
    if rows:
        logs["eval/results"] = wandb.Table(columns=COLUMNS,
                                           data=[[r.get(c) for c in COLUMNS] for r in rows])
    for channel in sorted({r["channel"] for r in rows}):
        for metric, name in LINE_METRICS.items():
            xs, ys, keys = line_series(rows, channel, metric)
            if keys:
                logs[f"eval/{metric}_{channel}"] = wandb.plot.line_series(
                    xs=xs, ys=ys, keys=keys, title=f"{name} against SNR ({channel})",
                    xname="SNR (dB)")
    for png in sorted((root / "figures").glob("*.png")):
        logs[f"figures/{png.stem}"] = wandb.Image(str(png), caption=png.stem)
    codec: dict[str, dict[str, Curve]] = {}  # metric -> run -> points
    x_of: dict[str, str] = {}
    for run in sorted(root.glob("codec*/fc*/codec-fc*")):  # Lightning's CSV logger's runs
        for metric, (xname, pts) in lightning_csv_curves(run).items():
            if len(pts) > 1:
                codec.setdefault(metric, {})[f"{run.parent.parent.name} {run.parent.name}"] = pts
                x_of[metric] = xname
    for metric, curves in codec.items():
        logs[f"codec/{metric}"] = _series(curves, f"codec {metric}", x_of[metric])
    ppo: dict[str, dict[str, Curve]] = {}
    for folder in [root / "ppo", *sorted(root.glob("fig10/*/ppo")),
                   *sorted(root.glob("blocks/*/ppo"))]:  # the main run, the sweeps' runs
        exp = _newest([p for p in (folder / "logs").glob("*") if (p / "scalars").is_dir()])
        name = ("main" if folder == root / "ppo"
                else f"{folder.parent.parent.name} {folder.parent.name}")
        for metric, pts in (torchrl_csv_curves(exp) if exp else {}).items():
            if len(pts) > 1:  # a learning curve (not the held-out scores at the end)
                ppo.setdefault(metric, {})[name] = pts
    for metric, curves in ppo.items():
        logs[f"ppo/{metric}"] = _series(curves, f"PPO {metric}", "frames")
    with wandb_run(cfg, root, name="demo", job_type="demo") as run:
        run.log(logs)
        run.summary.update({f"seconds/{k}": v for k, v in (timings or {}).items()})
        return offline_run_dir(run)


def main(cfg: MegConfig) -> Path:
    """Run the demo on ``cfg`` (``meg demo`` composes it on :data:`DEFAULTS`)."""
    save_resolved(cfg, cfg.out_dir)
    if cfg.model in ("tiny", "mini"):  # small models: one thread is as fast, and far faster
        with torch_threads(1):         # when the CPU is shared (runtime.torch_threads)
            return _run(cfg)
    return _run(cfg)


def _available_schemes(cfg: MegConfig) -> MegConfig:
    """Leave out (with a note) the schemes whose trained codec the demo does not train and that
    has no source for some rate: none trained in out_dir, none named, none shipped for the model
    (e.g. ``meg-adaptive`` with model=tiny)."""
    trained = codec_train.run_dir(cfg).parent.name  # the folder the demo's train-codec fills
    keep = []
    for s in cfg.eval.schemes:
        learned = scheme_class(s).learned
        if learned is not None and learned != trained:
            try:
                for fc in scheme_fcs(cfg, s):
                    codec_source(cfg, learned, fc)
            except UserError as e:
                print(f"meg demo: {s} left out ({e})", flush=True)
                continue
        keep.append(s)
    if keep == list(cfg.eval.schemes):
        return cfg
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, schemes=keep))


def _run(cfg: MegConfig) -> Path:
    timings: dict[str, float] = {}
    cfg = _available_schemes(cfg)
    to_wandb = cfg.logger == "wandb"
    if to_wandb:  # the stages log to CSV, and one W&B run of the whole demo collects their curves
        # at the end (log_to_wandb): one run to sync, not one per codec rate, PPO run and sweep
        cfg = dataclasses.replace(cfg, logger="csv")
    _, timings["latents"] = _stage("latents", cache.main, cfg)
    t = 0.0
    for fc in codec_fcs(cfg, codec_train.run_dir(cfg).parent.name):
        cfg_fc = dataclasses.replace(cfg, codec=dataclasses.replace(cfg.codec, fc=fc))
        _, dt = _stage(f"train-codec fc={fc:g}", codec_train.main, cfg_fc)
        t += dt
    timings["train-codec"] = t
    _, timings["train-ppo"] = _stage("train-ppo", ppo_command.main, cfg)
    _, timings["eval"] = _stage("eval", sweep.main, cfg)
    _, timings["seed reference"] = _stage("seed reference", seed_reference, cfg)
    _, timings["figures"] = _stage("figures", figures.main, cfg)
    run_dir = None
    if to_wandb:
        try:
            run_dir, timings["wandb"] = _stage("wandb", log_to_wandb, cfg, dict(timings))
        except Exception as e:  # noqa: BLE001 - the report matters more than its W&B copy
            print(f"meg demo: no W&B run ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
    report = write_report(cfg, timings)
    print(f"\nmeg demo: done in {sum(timings.values()):.0f} s -> {report}")
    if run_dir is not None:
        print(f"meg demo: W&B run (offline) -> {run_dir}; to view it, upload it with "
              f"`wandb sync {run_dir}` (needs a W&B account; logger=csv: no W&B run)")
    return report
