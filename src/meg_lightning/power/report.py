"""The power-control section of a report, in Markdown, from the files `meg train-ppo` writes
(``ppo/eval.json``, ``ppo/fig10.csv``, ``ppo/blocks.csv``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["markdown", "fig10_verdict"]


def _f(v: Any, fmt: str = ".4g") -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else format(x, fmt)


def _ci(row: dict, key: str, fmt: str = ".4g") -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if _f(lo) == "-" or _f(hi) == "-":
        return _f(v, fmt)
    return f"{_f(v, fmt)} [{_f(lo, fmt)}, {_f(hi, fmt)}]"


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def fig10_verdict(rows: list[dict[str, str]]) -> list[str]:
    """For each budget: does PPO keep within 2% of the causal DP (held-out latent MSE), and where
    the causal DP beats equal power by more than the FID interval, is PPO's FID below equal's?"""
    out = []
    for p in sorted({float(r["p_max_mw"]) for r in rows}):
        by = {r["policy"]: r for r in rows if float(r["p_max_mw"]) == p}
        ppo, dp, eq = by.get("ppo"), by.get("causal_dp"), by.get("equal")
        if not (ppo and dp and eq):
            continue
        head = f"P_max {p:g} mW ({float(ppo['snr_db']):.1f} dB): "
        words: list[str] = []
        ratio = ppo.get("vs_causal_dp")
        if _f(ratio) != "-":
            words.append(f"PPO / causal DP = {float(ratio):.3f}"
                         + (f" [{float(ppo['vs_causal_dp_lo']):.3f}, "
                            f"{float(ppo['vs_causal_dp_hi']):.3f}]"
                            if _f(ppo.get("vs_causal_dp_lo")) != "-" else "")
                         + (" (within 2%)" if float(ratio) <= 1.02 else " (**more than 2% above**)"))
        if _f(eq.get("fid")) != "-" and _f(dp.get("fid_hi")) != "-":
            if float(dp["fid_hi"]) < float(eq["fid"]):
                better = float(ppo["fid"]) < float(eq["fid"])
                words.append(f"causal DP beats equal beyond its FID interval; PPO's FID "
                             f"{float(ppo['fid']):.1f} vs equal {float(eq['fid']):.1f}: "
                             + ("lower" if better else "**not lower**"))
            else:
                words.append("causal DP within equal's FID interval (allocation matters little)")
        if _f(ppo.get("power_saved_db")) != "-":
            words.append(f"PPO saves {float(ppo['power_saved_db']):.1f} dB of budget at "
                         "equal FID")
        out.append("- " + head + "; ".join(words))
    return out


def markdown(root: Path, title_channel: str = "Rayleigh") -> list[str]:
    """The section's lines (empty when ``root/ppo/eval.json`` does not exist)."""
    ev = root / "ppo" / "eval.json"
    if not ev.is_file():
        return []
    res = json.loads(ev.read_text())
    pol = res.get("policies", {})
    dp = pol.get("causal_dp", {}).get("latent_mse")
    lines = [f"## Power control (PPO, {res.get('num_blocks')} {title_channel} blocks)", "",
             f"Held-out latent MSE (lower is better) at {_f(res.get('snr_db'), 'g')} dB average "
             f"SNR on {res.get('n')} episodes whose seeds, fading and noise all policies share; "
             f"PPO trained {res.get('frames')} frames in {_f(res.get('train_seconds'), '.0f')} s.",
             "", "| policy | latent MSE [95%] | / causal DP |", "|---|---|---|"]
    for name, r in pol.items():
        rel = r["latent_mse"] / dp if dp else float("nan")
        lines.append(f"| {name} | {_ci(r, 'latent_mse')} | {_f(rel, '.3f')} |")
    if res.get("ratio_ci"):
        lo, hi = res["ratio_ci"]
        lines += ["", f"PPO / causal DP: paired bootstrap 95% interval [{lo:.3f}, {hi:.3f}]."]
    rows = _rows(root / "ppo" / "fig10.csv")
    if rows:
        lines += ["", "### Fig. 10: quality against the power budget", "",
                  "FID (mini-FID for `mini`), PSNR and semantic accuracy of the UE images on the "
                  "held-out test prompts, each policy on the same fading and noise; latent MSE "
                  "and its ratio to the causal DP on the held-out episodes; power saved: how many "
                  "dB less budget equal power would need for the same FID.", "",
                  "| P_max (mW) | avg SNR (dB) | policy | FID [95%] | PSNR (dB) | semantic acc. | "
                  "latent MSE | / causal DP | power saved (dB) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {_f(r['p_max_mw'], 'g')} | {_f(r['snr_db'], '.1f')} | {r['policy']} | "
                         f"{_ci(r, 'fid', '.1f')} | {_f(r['psnr'], '.2f')} | "
                         f"{_f(r['accuracy'], '.3f')} | {_f(r.get('held_out_mse'))} | "
                         f"{_f(r.get('vs_causal_dp'), '.3f')} | {_f(r.get('power_saved_db'), '.1f')} |")
        lines += ["", *fig10_verdict(rows)]
    blocks = _rows(root / "ppo" / "blocks.csv")
    if blocks:
        lines += ["", "### Block counts", "",
                  f"Held-out latent MSE at {_f(blocks[0]['snr_db'], 'g')} dB average SNR; PPO "
                  "frames 0: the main policy acting at that block count as it is (no training "
                  "there).", "",
                  "| B | policy | latent MSE [95%] | / causal DP | PPO frames | PPO training (s) |",
                  "|---|---|---|---|---|---|"]
        for r in blocks:
            lines.append(f"| {r['num_blocks']} | {r['policy']} | {_ci(r, 'latent_mse')} | "
                         f"{_f(r['vs_causal_dp'], '.3f')} | {r.get('frames') or '-'} | "
                         f"{_f(r.get('train_seconds'), '.0f')} |")
    return lines + [""]
