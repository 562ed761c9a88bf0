"""`meg eval-multiuser`: users served per frame at a quality target, TDMA against NOMA.

For every channel kind (``eval.channels``), average SNR (``eval.snrs_db``), scheme
(``eval.schemes``) and rate (``eval.fcs`` / ``eval.scheme_fcs``), access (``users.accesses``) and
K (``users.ks``), the K users' links are planned (:mod:`.access`: average SNRs spread by
``users.spread_db`` around the cell's SNR, equal TDMA shares, NOMA pairs with
``users.noma_power``) and every user sends the first ``eval.num_images`` test latents through the
scheme at its budget and its link, with its own noise seed (user 0's is the single-user cell's,
:func:`meg_lightning.evaluation.cells.cell_seed`, so K = 1 is the single-user cell exactly). Each
user's PSNR and semantic accuracy come from :func:`meg_lightning.evaluation.cell_metrics.run_cell`.

**A user's budget.** The frame has the channel uses of one single-user transmission of the scheme
at fc. A user with a slot share s: a scheme with a rate runs at ``fc s`` (the linear code is fitted
at that rate; a learned codec at that rate when one exists, else the largest shipped rate below
it, the rest of the slot idle; none: the user is not served); a rate-less scheme (``centralized``,
``feature``) sends the first ``round(s N)`` of its N symbols (:class:`.access.Slot`).

**Served.** A user meets the target when its mean PSNR >= ``users.psnr_target_db`` and its
semantic accuracy >= ``users.accuracy_target`` (the accuracy condition is dropped when the model
has no judge). *Users served* of (scheme, fc, access, channel, SNR) is the largest swept K for
which ALL K users meet the target (0: not even one user alone).

Outputs under ``{out_dir}/multiuser/``: ``results.csv`` (one row per user and frame
configuration), ``served.csv`` (one row per (scheme, fc, access, channel, SNR, K): the worst
user's PSNR and accuracy, Jain's index over the users' PSNR, whether all meet the target),
``users_served.png`` and ``summary.md``. No resume: a run rewrites them.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from meg_lightning.channels import CHANNELS
from meg_lightning.codecs import pretrained
from meg_lightning.codecs.base import code_length
from meg_lightning.codecs.store import load_learned_codec
from meg_lightning.config import MegConfig, save_resolved
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.evaluation.cell_metrics import run_cell
from meg_lightning.evaluation.cells import Cell, cell_seed, scheme_fcs
from meg_lightning.evaluation.inputs import (
    _default_datamodule,
    _default_judge,
    _default_linear,
    _default_vae,
    _device,
    check_num_images,
    default_channel,
    judge_batch,
    test_latents,
    train_latents,
)
from meg_lightning.generation import decode_latents
from meg_lightning.io import atomic_write_text
from meg_lightning.metrics import extract_features, make_feature_extractor
from meg_lightning.mini.classifier import domain_features
from meg_lightning.multiuser import noma
from meg_lightning.multiuser.access import Slot, UserLink, frame_links, jain_index, slot_symbols
from meg_lightning.schemes import BuildContext, build, scheme_class

USER_COLUMNS = ["scheme", "fc", "access", "channel", "snr_db", "k", "user", "role",
                "avg_snr_db", "link_snr_db", "share", "power", "rate", "symbols", "psnr_db",
                "semantic_accuracy", "latent_mse", "meets", "seed", "time_s", "note"]
SERVED_COLUMNS = ["scheme", "fc", "access", "channel", "snr_db", "k", "min_psnr_db",
                  "mean_psnr_db", "min_accuracy", "mean_accuracy", "jain_psnr", "all_meet"]


def out_dir(cfg: MegConfig) -> Path:
    return Path(cfg.out_dir) / "multiuser"


def user_seed(base_seed: int, cell: Cell, user: int) -> int:
    """User 0's noise seed is the single-user cell's; user u > 0 has its own."""
    return cell_seed(base_seed, cell.key if user == 0 else f"{cell.key}_user{user}")


def frame_symbols(name: str, fc: Optional[float], numel: int,
                  image_numel: int) -> int:
    """N, the real symbols of one single-user transmission of the scheme at fc: the frame."""
    if fc is not None:
        return code_length(fc, numel)
    return image_numel if scheme_class(name).paper_role == "pixels" else numel


def learned_rate(cfg: MegConfig, name: str, rate: float, load: Callable[[float], Any]
                 ) -> Optional[float]:
    """The rate a learned scheme runs at within a budget ``rate``: ``rate`` itself when its codec
    loads, else the largest shipped rate <= ``rate`` (None: none)."""
    for r in [rate] + sorted((f for f in pretrained.available(cfg.model) if f <= rate + 1e-12),
                             reverse=True):
        try:
            load(r)
            return r
        except (UserError, ConfigError, FileNotFoundError):
            continue
    return None


@torch.no_grad()
def user_outputs(scheme: Any, channel: Any, z: Tensor, i_0: Tensor, *, seed: int,
                 batch_size: int, device: Any = "cpu") -> list:
    """The scheme's outputs for ``z`` in batches from one generator seeded ``seed``, as
    :func:`~meg_lightning.evaluation.cell_metrics.run_cell` draws them (the z_hat of a user)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return [scheme(z[s:s + batch_size].to(device), i_0[s:s + batch_size].to(device),
                   channel=channel, generator=gen)
            for s in range(0, len(z), batch_size)]


def user_scheme(cfg: MegConfig, ctx: BuildContext, name: str, fc: Optional[float],
                link: UserLink, channel: Any, n_frame: int) -> tuple[Any, Any, Optional[float],
                                                                    int, str]:
    """(scheme, its channel, its rate, real symbols sent, note) of a user in its slot; scheme
    None when it cannot be served in the slot (the note says why)."""
    cls = scheme_class(name)
    budget = slot_symbols(n_frame, link.share)
    if budget < 1:
        return None, channel, None, 0, "slot of no symbol"
    if fc is None:
        return build(name, ctx, None), Slot(channel, budget), None, budget, ""
    rate = fc * link.share if link.share != 1.0 else fc
    if rate * ctx.numel + 0.5 < 1:
        return None, channel, rate, 0, "rate below one symbol"
    if cls.learned:
        got = learned_rate(cfg, name, rate, lambda r: ctx.codec(cls.learned, r))
        if got is None:
            return None, channel, rate, 0, "no codec at or below the slot's rate"
        note = "" if math.isclose(got, rate) else f"codec fc {got:g} in a slot of fc {rate:.4g}"
        rate = got
    else:
        note = ""
    try:
        scheme = build(name, ctx, rate)
    except (UserError, ConfigError) as e:
        return None, channel, rate, 0, str(e).split(":")[0][:80]
    return scheme, channel, rate, code_length(rate, ctx.numel), note


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def meets(psnr: float, acc: float, users: Any) -> bool:
    ok_acc = math.isnan(acc) or acc >= users.accuracy_target
    return bool(not math.isnan(psnr) and psnr >= users.psnr_target_db and ok_acc)


def served_table(rows: list[dict]) -> list[dict]:
    """One row per (scheme, fc, access, channel, SNR, K) from the per-user rows."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scheme"], r["fc"], r["access"], r["channel"], r["snr_db"],
                           r["k"]), []).append(r)
    out = []
    for (scheme, fc, access, channel, snr, k), us in groups.items():
        p = [u["psnr_db"] for u in us]
        a = [u["semantic_accuracy"] for u in us]
        out.append({"scheme": scheme, "fc": fc, "access": access, "channel": channel,
                    "snr_db": snr, "k": k, "min_psnr_db": min(p), "mean_psnr_db": sum(p) / len(p),
                    "min_accuracy": min(a), "mean_accuracy": sum(a) / len(a),
                    "jain_psnr": jain_index([max(v, 0.0) for v in p]),
                    "all_meet": all(u["meets"] for u in us)})
    return out


def users_served(served: list[dict]) -> dict[tuple, int]:
    """(scheme, fc, access, channel, SNR) -> the largest K whose users all meet the target."""
    best: dict[tuple, int] = {}
    for r in served:
        key = (r["scheme"], r["fc"], r["access"], r["channel"], r["snr_db"])
        best.setdefault(key, 0)
        if r["all_meet"]:
            best[key] = max(best[key], int(r["k"]))
    return best


def check_access(cfg: MegConfig) -> None:
    """NOMA is simulated on the channels with noise (the noiseless reference channel has no SINR)
    and with an equaliser (its receivers use the gains)."""
    if "noma" in cfg.users.accesses:
        noiseless = [c for c in cfg.eval.channels if CHANNELS[c].noiseless]
        if noiseless:
            raise ConfigError("users.accesses", list(cfg.users.accesses),
                              f"[tdma] with eval.channels={list(cfg.eval.channels)}: NOMA needs "
                              f"a channel with noise (drop noma or {', '.join(noiseless)})")
        if cfg.channel.equalizer not in noma.EQUALIZERS:
            raise ConfigError("channel.equalizer", cfg.channel.equalizer,
                              f"one of {', '.join(noma.EQUALIZERS)} with users.accesses="
                              f"{list(cfg.users.accesses)} (the NOMA receivers use the gains)")


def run_multiuser(cfg: MegConfig, *, datamodule=None, decode_image=None, codecs=None,
                  linear_codes=None, feature_extractor=None, judge=None,
                  progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Run the sweep of the module docstring; returns (per-user rows, served rows) and writes the
    outputs. Inputs can be injected as in :func:`meg_lightning.evaluation.sweep.run_sweep`."""
    check_access(cfg)
    users = cfg.users
    device = _device(cfg)
    dm = datamodule if datamodule is not None else _default_datamodule(cfg)
    latent_shape = tuple(dm.latent_shape)
    if decode_image is None:
        vae = _default_vae(cfg, device).eval()

        def decode_image(zz: Tensor) -> Tensor:
            return decode_latents(vae, zz).float()

    cache: dict[str, Any] = {}

    def z_train() -> Tensor:
        if "z" not in cache:
            cache["z"] = train_latents(dm)
        return cache["z"]

    injected = dict(codecs or {})
    linear = dict(linear_codes or {})
    memo: dict[tuple, Any] = {}

    def codec(learned: str, fc: float) -> Any:
        if (learned, fc) not in memo:
            memo[(learned, fc)] = injected.get((learned, fc)) or load_learned_codec(
                cfg, learned, fc, latent_shape, device)
        return memo[(learned, fc)]

    def linear_code(fc: float) -> Any:
        if ("linear", fc) not in memo:
            memo[("linear", fc)] = linear.get(fc) or _default_linear(fc, z_train(), device)
        return memo[("linear", fc)]

    ctx = BuildContext(cfg=cfg, decode_image=decode_image, latent_shape=latent_shape,
                       device=device, z_train=z_train, codec=codec, linear_code=linear_code,
                       pipeline=lambda: None)
    extractor = (feature_extractor if feature_extractor is not None
                 else make_feature_extractor(cfg.eval.fid_features,
                                             domain_features(cfg.model, cfg.eval.fid_features))
                 ).to(device).eval()
    n = check_num_images(cfg, len(dm.dataset("test")))
    z, index = test_latents(dm, n)
    bs = cfg.eval.batch_size
    judge = judge if judge is not None else _default_judge(cfg, extractor)
    i_0 = torch.cat([decode_image(z[s:s + bs].to(device)).float().cpu()
                     for s in range(0, len(z), bs)])
    feats_0 = torch.cat([extract_features(extractor, i_0[s:s + bs].to(device))
                         for s in range(0, len(z), bs)])
    ref = (float(torch.cat([judge_batch(judge, i_0[s:s + bs], index[s:s + bs], extractor)
                            for s in range(0, len(z), bs)]).float().mean())
           if judge is not None else float("nan"))
    numel, image_numel = math.prod(latent_shape), i_0[0].numel()
    folder = out_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, folder)

    rows: list[dict] = []
    t_start = time.perf_counter()
    for kind in cfg.eval.channels:
        for snr in [float(s) for s in cfg.eval.snrs_db]:
            for name in cfg.eval.schemes:
                for fc in scheme_fcs(cfg, name):
                    cell = Cell(name, kind, snr, fc)
                    for access in users.accesses:
                        if access == "noma" and not noma.supports(scheme_class(name)):
                            continue  # no superposed receiver for this digital scheme
                        for k in users.ks:
                            rows += _frame(cfg, ctx, cell, access, k, z, i_0, feats_0, index,
                                           extractor, judge, numel, image_numel, device)
                            if progress:
                                print(f"eval-multiuser: {cell.key} {access} K={k} "
                                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    served = served_table(rows)
    write_outputs(cfg, rows, served, ref, time.perf_counter() - t_start)
    return rows, served


def _frame(cfg, ctx, cell, access, k, z, i_0, feats_0, index, extractor, judge, numel,
           image_numel, device) -> list[dict]:
    """The per-user rows of one frame configuration."""
    links = frame_links(cfg.users, cell.snr_db, k=k, access=access)
    rows = []
    n_frame = frame_symbols(cell.scheme, cell.fc, numel, image_numel)
    built = {}
    for link in links:
        # a NOMA user's channel is its own at its average SNR: noma superposes the pair's seeds
        snr = link.avg_snr_db if access == "noma" else link.snr_db
        built[link.user] = (user_scheme(cfg, ctx, cell.scheme, cell.fc, link,
                                        default_channel(cfg, cell.channel, snr), n_frame)
                            if link.power > 0 else (None, None, None, 0, "no power"))
    if access == "noma":
        built = noma.noma_users(links, built, z, i_0, cfg.users.sic)
    for link in links:
        t0 = time.perf_counter()
        seed = user_seed(cfg.seed, cell, link.user)
        scheme, ch, rate, symbols, note = built[link.user]
        row = {"scheme": cell.scheme, "fc": cell.fc, "access": access, "channel": cell.channel,
               "snr_db": cell.snr_db, "k": k, "user": link.user, "role": link.role,
               "avg_snr_db": link.avg_snr_db,
               "link_snr_db": getattr(scheme, "snr_db", link.snr_db) if access == "noma"
               else link.snr_db, "share": link.share,
               "power": link.power, "rate": rate, "symbols": symbols, "seed": seed,
               "note": note}
        if scheme is None:
            row.update(psnr_db=float("nan"), semantic_accuracy=float("nan"),
                       latent_mse=float("nan"), meets=False)
        else:
            m, _ = run_cell(cell, scheme, ch, z, i_0, feats_0, extractor=extractor,
                            batch_size=cfg.eval.batch_size, seed=seed, bootstrap=0,
                            device=device, index=index, judge=judge)
            row.update(psnr_db=m["psnr_db"], semantic_accuracy=m["semantic_accuracy"],
                       latent_mse=m["latent_mse"],
                       meets=meets(m["psnr_db"], m["semantic_accuracy"], cfg.users))
            if m.get("sic_failed", 0) > 0:
                row["note"] = f"SIC failed on {m['sic_failed']:.0%} of images"
        row["time_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def write_outputs(cfg: MegConfig, rows: list[dict], served: list[dict], ref: float,
                  seconds: float) -> None:
    """results.csv, served.csv, users_served.png and summary.md under {out_dir}/multiuser."""
    folder = out_dir(cfg)
    atomic_write_text(folder / "results.csv", _csv(rows, USER_COLUMNS))
    atomic_write_text(folder / "served.csv", _csv(served, SERVED_COLUMNS))
    best = users_served(served)
    plot_served(best, folder / "users_served.png", cfg)
    atomic_write_text(folder / "summary.md", summary(cfg, best, ref, seconds, len(rows)))


def summary(cfg: MegConfig, best: dict[tuple, int], ref: float, seconds: float,
            n_rows: int) -> str:
    u = cfg.users
    snrs = sorted({k[4] for k in best})
    lines = [f"# Users served per frame ({cfg.model}, {cfg.eval.num_images or 'all'} test images "
             "per user)", "",
             f"Target: every user's mean PSNR >= {u.psnr_target_db:g} dB and semantic accuracy "
             f">= {u.accuracy_target:g} (I_0's own accuracy: {ref:.2f}). Frame: the channel uses "
             "of one single-user transmission of the scheme at fc, shared by K users "
             f"(K in {list(u.ks)}); users' average SNRs spread over +-{u.spread_db / 2:g} dB "
             f"around the SNR; NOMA weak-user power {u.noma_power:g}. Largest K with all users "
             f"served (0: none). {n_rows} user rows in {seconds / 60:.1f} min.", "",
             "| scheme | fc | access | channel | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
             "|---|---|---|---|" + "---|" * len(snrs)]
    keys = sorted({k[:4] for k in best}, key=lambda k: (k[3], _order(k[0]), str(k[1]), k[2]))
    for key in keys:
        fc = "-" if key[1] is None else f"{key[1]:g}"
        vals = " | ".join(str(best.get((*key, s), "")) for s in snrs)
        lines.append(f"| {key[0]} | {fc} | {key[2]} | {key[3]} | {vals} |")
    return "\n".join(lines) + "\n"


def _order(name: str) -> int:
    return scheme_class(name).order


def plot_served(best: dict[tuple, int], path: Path, cfg: MegConfig) -> None:
    """Users served against the average SNR, a line per scheme (and rate), TDMA solid, NOMA
    dashed; one panel per channel kind."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    kinds = sorted({k[3] for k in best})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        lines = sorted({k[:3] for k in best if k[3] == kind},
                       key=lambda k: (_order(k[0]), str(k[1]), k[2]))
        for i, (scheme, fc, access) in enumerate(lines):
            pts = sorted((k[4], v) for k, v in best.items() if k[:4] == (scheme, fc, access, kind))
            label = f"{scheme}" + ("" if fc is None else f" fc {fc:g}") + f" ({access})"
            dodge = 0.25 * (i - (len(lines) - 1) / 2)  # dB, so that equal counts stay visible
            ax.plot([p[0] + dodge for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="-" if access == "tdma" else "--",
                    color=scheme_class(scheme).hue, label=label)
        ax.set_yscale("symlog", base=2, linthresh=1)
        ax.set_yticks([0] + [int(k) for k in sorted(cfg.users.ks)])
        ax.set_yticklabels(["0"] + [str(k) for k in sorted(cfg.users.ks)])
        ax.set_xticks(sorted({k[4] for k in best if k[3] == kind}))
        ax.set_xlabel("average SNR (dB; lines dodged by 0.25 dB)")
        ax.set_ylabel("users served per frame")
        ax.set_title(f"{kind}: PSNR >= {cfg.users.psnr_target_db:g} dB, "
                     f"accuracy >= {cfg.users.accuracy_target:g}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(cfg: MegConfig) -> None:
    """`meg eval-multiuser`: the sweep, then one summary line."""
    rows, served = run_multiuser(cfg)
    best = users_served(served)
    top = max(best.items(), key=lambda kv: kv[1]) if best else None
    line = (f"; most: {top[0][0]} {top[0][2]} at {top[0][4]:g} dB serves {top[1]}"
            if top else "")
    print(f"meg eval-multiuser: {len(rows)} user rows, users served (higher is better) in "
          f"{out_dir(cfg) / 'summary.md'}{line}")
