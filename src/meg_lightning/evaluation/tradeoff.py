"""Report sections on the full trade-off, written from a sweep's results rows (the demo report):
the learned codecs against the optimal linear code and the OPTA bound, what the generative
receiver adds (``X+dm`` against X), where prompt transmission works, the digital schemes' outage
against their 10% target, and which scheme wins at which UE compute budget. Every sentence is
computed from the rows it is given; nothing here knows the expected outcome."""

from __future__ import annotations

import math
from collections import defaultdict

from meg_lightning.evaluation.figure_compute import _num, compute_snrs, format_budget_winners
from meg_lightning.schemes import DM_SUFFIX, SCHEMES, having, order, with_role
from meg_lightning.schemes.ldpc import MCS_TABLE, TARGET_BLER, code_layout


def _rows_of(rows: list[dict], names: list[str]) -> list[dict]:
    return [r for r in rows if r["scheme"] in names]


def _fc(r: dict) -> str:
    fc = _num(r.get("fc"))
    return f" fc={fc:g}" if math.isfinite(fc) else ""


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in body]]


def dm_lines(rows: list[dict], channel: str = "awgn") -> list[str]:
    """X+dm against X at every swept SNR: PSNR, semantic accuracy, UE U-Net evaluations, and the
    lowest SNR from which the receiver stops helping (PSNR gain below 0.1 dB)."""
    by = {(r["scheme"], _fc(r), _num(r["snr_db"])): r for r in rows if r["channel"] == channel}
    pairs = sorted({(s[: -len(DM_SUFFIX)], fc) for s, fc, _ in by if s.endswith(DM_SUFFIX)})
    if not pairs:
        return []
    sem = any(math.isfinite(_num(r.get("semantic_accuracy"))) for r in rows)
    head = ["scheme", "SNR", "PSNR", "PSNR +dm", "gain (dB)"]
    head += ["accuracy", "accuracy +dm"] if sem else []
    head += ["U-Net evals at the UE", "sigma_e^2"]
    body, notes = [], []
    for base, fc in pairs:
        snrs = sorted(s for b, f, s in by if b == base + DM_SUFFIX and f == fc
                      and (base, fc, s) in by)
        stops = None
        for snr in snrs:
            a, d = by[(base, fc, snr)], by[(base + DM_SUFFIX, fc, snr)]
            gain = _num(d["psnr_db"]) - _num(a["psnr_db"])
            row = [f"{base}{fc}", f"{snr:g} dB", f"{_num(a['psnr_db']):.2f}",
                   f"{_num(d['psnr_db']):.2f}", f"{gain:+.2f}"]
            if sem:
                row += [f"{_num(a.get('semantic_accuracy')):.2f}",
                        f"{_num(d.get('semantic_accuracy')):.2f}"]
            row += [f"{_num(d.get('ue_unet_evals')):.1f}", f"{_num(d.get('dm_sigma_e2')):.3g}"]
            body.append(row)
            if gain < 0.1 and stops is None:
                stops = (snr, gain)
            elif gain >= 0.1:
                stops = None
        if stops is None:
            notes.append(f"`{base}+dm`{fc} gains PSNR at every swept SNR.")
        else:
            notes.append(f"`{base}+dm`{fc} stops helping from {stops[0]:g} dB "
                         f"(PSNR gain {stops[1]:+.2f} dB there and above).")
    return (["## Generative receivers at the UE (X+dm against X, " + channel + ")", "",
             "The UE treats the received latent as a diffusion state at the step matched to the "
             "scheme's latent error variance sigma_e^2 (measured on training latents at that "
             "SNR) and runs the remaining prompt-conditioned DDIM steps.", ""]
            + _table(head, body) + ["", " ".join(notes), ""])


def prompt_lines(rows: list[dict]) -> list[str]:
    """Where sending the prompt and the seed works: payload, threshold SNR, delivered share."""
    pr = _rows_of(rows, having(regenerates=True))
    if not pr:
        return []
    out = ["## Prompt transmission (prompt + seed, UE runs the whole generation)", ""]
    body = []
    fails: dict[tuple, list[float]] = defaultdict(list)
    for r in sorted(pr, key=lambda r: (r["channel"], _num(r.get("fc")), _num(r["snr_db"]))):
        ok = _num(r.get("success"))
        body.append([r["channel"], f"{r['scheme']}{_fc(r)}", f"{_num(r['snr_db']):g} dB",
                     f"{_num(r.get('payload_bits')):.0f}", f"{_num(r.get('threshold_snr_db')):.2f}",
                     f"{ok:.2f}", f"{_num(r['psnr_db']):.2f}", f"{int(_num(r['psnr_capped']))}"
                     f"/{int(_num(r['n_images']))}", f"{_num(r.get('ue_unet_evals')):.0f}"])
        if ok < 1:
            fails[(r["channel"], f"{r['scheme']}{_fc(r)}")].append(_num(r["snr_db"]))
    out += _table(["channel", "scheme", "SNR", "payload bits", "threshold SNR (AWGN)",
                   "delivered", "PSNR", "= I_0", "U-Net evals at the UE"], body)
    out.append("")
    text = ["Where the bits arrive the UE regenerates I_0 exactly (PSNR at the cap). On an "
            "outage it has nothing to generate from and shows mid-grey."]
    for (channel, label), snrs in sorted(fails.items()):
        text.append(f"{label} on {channel} loses images (delivered < 1) at "
                    + ", ".join(f"{s:g}" for s in sorted(snrs)) + " dB.")
    return out + [" ".join(text), ""]


def compute_lines(rows: list[dict], channel: str = "awgn") -> list[str]:
    """Which scheme wins at which UE compute budget, per SNR, from the rows' compute columns:
    the best scheme (PSNR; also semantic accuracy when measured) whose UE GFLOPs per image fit
    the budget, listed where the winner changes."""
    if not any(math.isfinite(_num(r.get("ue_gflops"))) for r in rows):
        return []
    out = [f"## Quality against UE compute ({channel})", "",
           "Every row of the results has `ue_unet_evals`, `ue_gflops` and `es_gflops` (GFLOPs "
           "per image at the UE and at the edge server; evaluation/compute.py). The best "
           "scheme within each UE budget (the winner changes at each line):", ""]
    metrics = [("psnr_db", "PSNR")]
    if any(math.isfinite(_num(r.get("semantic_accuracy"))) for r in rows):
        metrics.append(("semantic_accuracy", "semantic accuracy"))
    for snr in compute_snrs(rows, channel):
        for metric, name in metrics:
            text = format_budget_winners(rows, snr, metric, channel=channel)
            if text:
                out += [f"- **{snr:g} dB, {name}**: " + "; ".join(text.splitlines())]
    costs = {}
    for r in rows:
        if r["channel"] == channel and math.isfinite(_num(r.get("ue_gflops"))):
            costs.setdefault((r["scheme"], _fc(r)), (_num(r["ue_gflops"]), _num(r["es_gflops"]),
                                                     _num(r.get("ue_unet_evals"))))
    out += ["", "UE / ES GFLOPs per image (the `+dm` rows vary with SNR: the first swept SNR's "
            "value is shown):", ""]
    out += _table(["scheme", "UE GFLOPs", "ES GFLOPs", "U-Net evals at the UE"],
                  [[f"{s}{fc}", f"{u:.4g}", f"{e:.4g}", f"{n:.1f}"]
                   for (s, fc), (u, e, n) in sorted(costs.items(), key=lambda kv: kv[1][0])])
    return out + [""]


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``p`` measured on ``n`` trials."""
    if n <= 0 or not math.isfinite(p):
        return math.nan, math.nan
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def _mcs_name(m: float) -> str:
    if not math.isfinite(m) or not 0 <= m < len(MCS_TABLE):
        return "ideal"
    if m != int(m):
        return f"mean index {m:.1f}"  # an MCS per image (digital-csit)
    return MCS_TABLE[int(m)].name


def _most_robust(r: dict) -> bool:
    """Whether the row's MCS is the lowest-rate one that fits its budget (sent when no MCS
    meets the target at this SNR)."""
    m, symbols = _num(r.get("mcs")), _num(r.get("symbols"))
    if not (math.isfinite(m) and m == int(m) and math.isfinite(symbols)):
        return False
    fits = [x.index for x in MCS_TABLE if code_layout(int(symbols) // 2, x) is not None]
    return bool(fits) and int(m) == fits[0]


def digital_lines(rows: list[dict]) -> list[str]:
    """The digital schemes with a real code: per cell the MCS, the measured codeword error rate
    (the outage of a fixed-rate code) with its 95% interval against the 10% target the MCS is
    chosen for, the delivered share, PSNR and latent MSE; then, per scheme and channel, the
    SNRs where the target is not met."""
    dg = sorted(_rows_of(rows, having(digital=True, yields_latent=True)),
                key=lambda r: (order(r["scheme"]), r["channel"], _num(r.get("fc")),
                               _num(r["snr_db"])))
    if not dg:
        return []
    body, misses = [], defaultdict(list)
    pct = f"{TARGET_BLER:.0%}"
    for r in dg:
        bler, n = _num(r.get("bler")), int(_num(r.get("n_images")) or 0)
        lo, hi = wilson_interval(bler, n)
        cls = SCHEMES[r["scheme"]] if r["scheme"] in SCHEMES else None
        if not math.isfinite(bler) or cls is None or cls.channel_code != "ldpc":
            met = "-"  # an ideal code has no MCS and no target
        elif bler <= TARGET_BLER:
            met = "yes"
        elif lo <= TARGET_BLER:
            met = "yes (within the interval)"
        else:
            met = "no" + (": no MCS meets it here" if _most_robust(r) else "")
            misses[(f"`{r['scheme']}`{_fc(r)}", r["channel"])].append(_num(r["snr_db"]))
        body.append([f"{r['scheme']}{_fc(r)}", r["channel"], f"{_num(r['snr_db']):g} dB",
                     _mcs_name(_num(r.get("mcs"))), f"{_num(r.get('payload_bits')):.0f}",
                     f"{bler:.3f}", f"{lo:.3f}-{hi:.3f}", met,
                     f"{_num(r.get('success')):.2f}", f"{_num(r['psnr_db']):.2f}",
                     f"{_num(r.get('latent_mse')):.4f}"])
    what = "; ".join(f"`{s}` is {SCHEMES[s].summary}"
                     for s in dict.fromkeys(r["scheme"] for r in dg)
                     if s in SCHEMES and SCHEMES[s].summary)
    notes = [f"{name} on {ch} is above the {pct} target at " + ", ".join(f"{x:g}" for x in snrs)
             + " dB." for (name, ch), snrs in misses.items()]
    if not notes:
        notes = [f"Every cell is at or below the {pct} target (within its 95% interval)."]
    return (["## Digital separation (KLT quantiser + 5G LDPC + QAM, MCS per SNR)", "",
             f"{what + '. ' if what else ''}The MCS is the highest-rate one whose measured "
             f"codeword error rate at the cell's SNR is at most {pct}: on AWGN from the AWGN "
             "thresholds, on a fading channel from thresholds measured on that channel at its "
             "average SNR (the outage of a fixed-rate code; schemes/ldpc.py); where no MCS meets "
             "the target the most robust one is sent. A failed codeword leaves its latent "
             f"components at the mean. BLER: codewords decoded wrongly (the outage), with its "
             f"95% interval over the cell's images, against the {pct} target.", ""]
            + _table(["scheme", "channel", "SNR", "MCS", "info bits", "BLER (outage)",
                      "95% interval", f"<= {pct}", "all decoded", "PSNR", "latent MSE"], body)
            + ["", " ".join(notes), ""])


def codec_schemes() -> list[str]:
    """The analog latent codes with a rate that the codec section compares, in column order."""
    return having(analog=True, uses_fc=True)


def _cell(v: float, spec: str) -> str:
    """A table cell: ``v`` formatted, or "-" when it is missing (nan)."""
    return format(v, spec) if math.isfinite(v) else "-"


def codec_lines(rows: list[dict]) -> list[str]:
    """The learned codecs against the optimal linear code and, on AWGN, the Gaussian OPTA bound,
    per channel, rate and SNR, led by the SNR-adaptive codec: test latent MSE and semantic
    accuracy, with the pixel benchmark's accuracy beside them; and where the adaptive codec is
    not below the linear code."""
    by = {(r["scheme"], r["channel"], _num(r.get("fc")), _num(r["snr_db"])): r for r in rows}
    have = [s for s in codec_schemes() if any(k[0] == s for k in by)]
    lead = next((s for s in have if SCHEMES[s].snr_adaptive), None)
    if lead is None or len(have) < 2:
        return []
    ref = next((s for s in have if SCHEMES[s].reference_code), None)
    pixels = with_role("pixels")
    keys = sorted({(c, fc, snr) for s, c, fc, snr in by if s == lead})
    centralized = {(r["channel"], _num(r["snr_db"])): r for r in rows if r["scheme"] in pixels}
    sem = any(math.isfinite(_num(r.get("semantic_accuracy"))) for r in rows)
    head = ["channel", "fc", "SNR"] + [f"{s} MSE" for s in have] + ["OPTA (AWGN)"]
    head += [f"{s} acc." for s in have] + [f"{pixels[0] if pixels else 'pixels'} acc."] if sem else []
    body, worse = [], []
    for channel, fc, snr in keys:
        cells = [by.get((s, channel, fc, snr)) for s in have]
        mse = [_num(r.get("latent_mse")) if r else math.nan for r in cells]
        opta = _num((by.get((lead, channel, fc, snr)) or {}).get("opta_latent_mse"))
        row = [channel, f"{fc:g}", f"{snr:g} dB"] + [_cell(m, ".4f") for m in mse + [opta]]
        if sem:
            acc = [_num(r.get("semantic_accuracy")) if r else math.nan for r in cells]
            central = _num(centralized.get((channel, snr), {}).get("semantic_accuracy"))
            row += [_cell(a, ".2f") for a in acc + [central]]
        body.append(row)
        if ref is not None:
            a, lin = mse[have.index(lead)], mse[have.index(ref)]
            if math.isfinite(a) and math.isfinite(lin) and a > lin:
                worse.append(f"{channel} fc={fc:g} {snr:g} dB ({a:.4f} > {lin:.4f})")
    if worse:
        verdict = f"`{lead}` is above `{ref}` in: " + "; ".join(worse) + "."
    elif ref is not None:
        verdict = f"`{lead}` has a latent MSE at most `{ref}`'s in every cell above."
    else:
        verdict = ""
    what = "; ".join(f"`{s}` is {SCHEMES[s].summary}" for s in have if SCHEMES[s].summary)
    return (["## Learned codecs against the optimal linear code and the OPTA bound", "",
             f"{what}; OPTA is the Gaussian bound for the training latents' spectrum (latents are "
             "not Gaussian: a code can go below it). Latent MSE per entry on the test images.",
             ""]
            + _table(head, body) + ["", verdict, ""])
