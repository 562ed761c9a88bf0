"""`meg eval-multiuser`: users served per frame at a quality target, TDMA against NOMA.

For every channel kind (``eval.channels``), average SNR (``eval.snrs_db``), scheme
(``eval.schemes``) and rate (``eval.fcs`` / ``eval.scheme_fcs``), access (``users.accesses``) and
K (``users.ks``), the K users' links are planned (:mod:`.access`: equal TDMA shares, NOMA pairs
with ``users.noma_power``) and every user sends the first ``eval.num_images`` test latents through
the scheme at its budget and its link, with its own noise seed (user 0's is the single-user
cell's, :func:`meg_lightning.evaluation.cells.cell_seed`, so K = 1 is the single-user cell
exactly). Each user's PSNR, semantic accuracy and mini-FID (against its own perfect images, over
its ``eval.num_images`` images) come from :func:`meg_lightning.evaluation.cell_metrics.run_cell`.

**The users' average SNRs** (``users.placement``): ``spread`` (default) equally spaced over the
cell's SNR +- ``users.spread_db / 2``; ``listed``: ``users.snrs_db``, the first K of them;
``umi``: ``max(users.ks)`` users dropped once in a 3GPP UMi-Street Canyon cell
(:mod:`.placement`), the first K of them, so that a frame's users are also in every larger
frame. With ``listed`` and ``umi`` the SNR axis is one point, the mean of the users' SNRs (dB).

**A user's budget.** The frame has the channel uses of one single-user transmission of the scheme
at fc. A user with a slot share s: a scheme with a rate runs at ``fc s`` (the linear code is fitted
at that rate; a learned codec at that rate when one exists, else the largest shipped rate below
it, the rest of the slot idle; none: the user is not served); a rate-less scheme (``centralized``,
``feature``) sends the first ``round(s N)`` of its N symbols (:class:`.access.Slot`).
``prompt`` has a rate (its budget is the learned codec's at fc): in a slot of share s it has the
``round(fc s |z|)`` symbols of its ideal code at ``fc s``, and an image is delivered (I_0 exactly)
when the prompt's and seed's bits fit the slot's capacity, else the UE shows grey: a slot carries
the whole prompt or nothing. ``X+dm`` is X in the slot as above (at ``fc s``, or X's first
symbols), then the diffusion receiver at the UE with X's error variance calibrated at the user's
link and slot; both get the test prompts and load the pipeline only when swept.

**Served.** A user meets the target when its mean PSNR >= ``users.psnr_target_db`` and its
semantic accuracy >= ``users.accuracy_target`` (the accuracy condition is dropped when the model
has no judge) and, when ``users.fid_target`` is set, its FID <= that. *Users served* of (scheme,
fc, access, channel, SNR) is the largest swept K for which ALL K users meet the target (0: not
even one user alone). The K are run in increasing order and, with ``users.stop_at_miss`` (the
default), the ones above the first K whose users do not all meet the target are skipped: users
served is then the K before it (every user's share only shrinks as K grows).

Outputs under ``{out_dir}/multiuser/``: ``results.csv`` (one row per user and frame
configuration), ``served.csv`` (one row per (scheme, fc, access, channel, SNR, K): the worst
user's PSNR, accuracy and FID, the mean user's, Jain's index over the users' PSNR, whether all
meet the target), ``users_served.png`` and ``summary.md``; with ``logger=wandb`` one offline W&B
run in ``wandb/`` (:func:`log_to_wandb`). No resume: a run rewrites them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from meg_lightning.channels import CHANNELS
from meg_lightning.codecs import pretrained
from meg_lightning.codecs.base import code_length
from meg_lightning.config import MegConfig, save_resolved
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.evaluation.cell_metrics import run_cell
from meg_lightning.evaluation.cells import Cell, cell_seed, scheme_fcs
from meg_lightning.evaluation.inputs import (
    _default_datamodule,
    _default_judge,
    _default_vae,
    _device,
    check_num_images,
    default_channel,
    image_decoder,
    injected_codecs,
    judge_batch,
    scheme_context,
    test_latents,
)
from meg_lightning.io import atomic_write_text, csv_text
from meg_lightning.loggers import offline_run_dir, wandb_run
from meg_lightning.metrics import extract_features, make_feature_extractor
from meg_lightning.mini.classifier import domain_features
from meg_lightning.multiuser import noma
from meg_lightning.multiuser.access import (
    Slot,
    UserLink,
    frame_links,
    jain_index,
    plan_frame,
    slot_symbols,
)
from meg_lightning.multiuser.placement import Placement, drop_users
from meg_lightning.schemes import BuildContext, build, is_dm, runs_generator, scheme_class

USER_COLUMNS = ["scheme", "fc", "access", "channel", "snr_db", "k", "user", "role",
                "avg_snr_db", "link_snr_db", "share", "power", "rate", "symbols", "psnr_db",
                "semantic_accuracy", "fid", "latent_mse", "meets", "distance_m", "los",
                "pathloss_db", "seed", "time_s", "note"]
SERVED_COLUMNS = ["scheme", "fc", "access", "channel", "snr_db", "k", "min_psnr_db",
                  "mean_psnr_db", "min_accuracy", "mean_accuracy", "max_fid", "mean_fid",
                  "jain_psnr", "all_meet"]


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


def meets(psnr: float, acc: float, users: Any, fid: float = math.nan) -> bool:
    """Whether a user meets the target: PSNR, semantic accuracy (when judged) and, with
    ``users.fid_target`` set, FID (a nan FID, from fewer than 2 images, fails it)."""
    ok_acc = math.isnan(acc) or acc >= users.accuracy_target
    ok_fid = users.fid_target is None or (not math.isnan(fid) and fid <= users.fid_target)
    return bool(not math.isnan(psnr) and psnr >= users.psnr_target_db and ok_acc and ok_fid)


def _worst(pick: Callable, values: list[float]) -> float:
    """The worst user's value (``pick``: min or max); nan when a user has none (not served)."""
    return math.nan if any(math.isnan(v) for v in values) else pick(values)


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
        f = [u.get("fid", math.nan) for u in us]
        out.append({"scheme": scheme, "fc": fc, "access": access, "channel": channel,
                    "snr_db": snr, "k": k, "min_psnr_db": _worst(min, p),
                    "mean_psnr_db": sum(p) / len(p), "min_accuracy": _worst(min, a),
                    "mean_accuracy": sum(a) / len(a), "max_fid": _worst(max, f),
                    "mean_fid": sum(f) / len(f),
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


def placed_users(cfg: MegConfig) -> tuple[Optional[list[float]], Optional[Placement]]:
    """The users' average SNRs (dB) that do not come from the cell's SNR, and the UMi drop they
    come from: ``users.snrs_db`` (``listed``), the SNRs of ``max(users.ks)`` users dropped once
    in the UMi cell from the sweep's seed (``umi``, :func:`.placement.drop_users`), or (None,
    None) for ``spread``. A frame of K users takes the first K."""
    users = cfg.users
    if users.placement == "listed":
        return [float(s) for s in users.snrs_db], None
    if users.placement == "umi":
        gen = torch.Generator().manual_seed(cell_seed(cfg.seed, "users-umi"))
        where = drop_users(max(users.ks), users, gen)
        return where.snr_db, where
    return None, None


def sweep_snrs(cfg: MegConfig, placed: Optional[list[float]]) -> list[float]:
    """The sweep's SNR axis: ``eval.snrs_db`` (``spread``: the users spread around each); with
    placed users, one point, the mean of their average SNRs in dB (rounded to 0.01 dB)."""
    if placed is None:
        return [float(s) for s in cfg.eval.snrs_db]
    return [round(sum(placed) / len(placed), 2)]


def user_links(cfg: MegConfig, snr_db: float, k: int, access: str,
               placed: Optional[list[float]] = None) -> list[UserLink]:
    """The links of a frame of K users: spread around ``snr_db`` (``users.placement=spread``,
    :func:`.access.frame_links`) or the first K ``placed`` SNRs; ``users.shares`` at K =
    ``users.k``."""
    users = cfg.users
    if placed is None:
        return frame_links(users, snr_db, k=k, access=access)
    return plan_frame(access, placed[:k], users.shares if k == users.k else None,
                      users.noma_power)


def run_multiuser(cfg: MegConfig, *, datamodule=None, decode_image=None, codecs=None,
                  linear_codes=None, feature_extractor=None, judge=None, pipeline=None,
                  prompts: Optional[list[str]] = None,
                  progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Run the sweep of the module docstring; returns (per-user rows, served rows) and writes the
    outputs. Inputs can be injected as in :func:`meg_lightning.evaluation.sweep.run_sweep`
    (``pipeline`` and ``prompts`` for ``prompt`` and ``X+dm``)."""
    check_access(cfg)
    users = cfg.users
    device = _device(cfg)
    dm = datamodule if datamodule is not None else _default_datamodule(cfg)
    latent_shape = tuple(dm.latent_shape)
    if decode_image is None:
        decode_image = image_decoder(cfg, device, _default_vae(cfg, device))
    ctx, all_prompts = scheme_context(cfg, dm, device, decode_image,
                                      codecs=injected_codecs(codecs), linear_codes=linear_codes,
                                      pipeline=pipeline, prompts=prompts)
    extractor = (feature_extractor if feature_extractor is not None
                 else make_feature_extractor(cfg.eval.fid_features,
                                             domain_features(cfg.model, cfg.eval.fid_features))
                 ).to(device).eval()
    n = check_num_images(cfg, len(dm.dataset("test")))
    z, index = test_latents(dm, n)
    test_prompts = ([all_prompts()[int(i)] for i in index]
                    if any(runs_generator(s) for s in cfg.eval.schemes) else None)
    placed, where = placed_users(cfg)
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
        for snr in sweep_snrs(cfg, placed):
            for name in cfg.eval.schemes:
                for fc in scheme_fcs(cfg, name):
                    cell = Cell(name, kind, snr, fc)
                    for access in users.accesses:
                        if access == "noma" and not noma.supports(scheme_class(name)):
                            continue  # no superposed receiver for this digital scheme
                        for k in sorted(users.ks):
                            frame = _frame(cfg, ctx, cell, access, k, z, i_0, feats_0, index,
                                           extractor, judge, numel, image_numel, device,
                                           prompts=test_prompts, placed=placed, where=where)
                            rows += frame
                            if progress:
                                print(f"eval-multiuser: {cell.key} {access} K={k} "
                                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
                            if users.stop_at_miss and not all(r["meets"] for r in frame):
                                break  # more users only shrink every user's share
    served = served_table(rows)
    write_outputs(cfg, rows, served, ref, time.perf_counter() - t_start)
    return rows, served


def _frame(cfg, ctx, cell, access, k, z, i_0, feats_0, index, extractor, judge, numel,
           image_numel, device, prompts=None, placed=None, where=None) -> list[dict]:
    """The per-user rows of one frame configuration (``prompts``: the test prompts, for the
    schemes that run the generator; ``placed`` / ``where``: :func:`placed_users`)."""
    links = user_links(cfg, cell.snr_db, k, access, placed)
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
               "note": note, **placement_columns(where, link.user)}
        if scheme is None:
            row.update(psnr_db=float("nan"), semantic_accuracy=float("nan"), fid=float("nan"),
                       latent_mse=float("nan"), meets=False)
        else:
            m, _ = run_cell(cell, scheme, ch, z, i_0, feats_0, extractor=extractor,
                            batch_size=cfg.eval.batch_size, seed=seed, bootstrap=0,
                            device=device, index=index, judge=judge, prompts=prompts)
            row.update(psnr_db=m["psnr_db"], semantic_accuracy=m["semantic_accuracy"],
                       fid=m["fid"], latent_mse=m["latent_mse"],
                       meets=meets(m["psnr_db"], m["semantic_accuracy"], cfg.users, m["fid"]))
            if m.get("sic_failed", 0) > 0:
                row["note"] = f"SIC failed on {m['sic_failed']:.0%} of images"
        row["time_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def placement_columns(where: Optional[Placement], user: int) -> dict:
    """A user's distance (m), LOS state and path loss (dB) in the UMi drop (empty otherwise)."""
    if where is None:
        return {"distance_m": None, "los": None, "pathloss_db": None}
    return {"distance_m": where.distance_m[user], "los": where.los[user],
            "pathloss_db": where.pathloss_db[user]}


def write_outputs(cfg: MegConfig, rows: list[dict], served: list[dict], ref: float,
                  seconds: float) -> None:
    """results.csv, served.csv, users_served.png and summary.md under {out_dir}/multiuser."""
    folder = out_dir(cfg)
    atomic_write_text(folder / "results.csv", csv_text(rows, USER_COLUMNS))
    atomic_write_text(folder / "served.csv", csv_text(served, SERVED_COLUMNS))
    best = users_served(served)
    plot_served(best, folder / "users_served.png", cfg)
    atomic_write_text(folder / "summary.md", summary(cfg, best, ref, seconds, len(rows)))


def summary(cfg: MegConfig, best: dict[tuple, int], ref: float, seconds: float,
            n_rows: int) -> str:
    u = cfg.users
    snrs = sorted({k[4] for k in best})
    fid = "" if u.fid_target is None else f" and FID <= {u.fid_target:g}"
    where = {"spread": f"users' average SNRs spread over +-{u.spread_db / 2:g} dB around the SNR",
             "listed": f"users' average SNRs users.snrs_db={list(u.snrs_db or [])} (the first K;"
                       " the column: their mean in dB)",
             "umi": f"users dropped in a 3GPP UMi-Street Canyon cell of radius "
                    f"{u.cell_radius_m:g} m, {u.tx_power_dbm:g} dBm over {u.bandwidth_mhz:g} MHz "
                    f"at {u.carrier_ghz:g} GHz (the column: their mean SNR in dB)"}[u.placement]
    lines = [f"# Users served per frame ({cfg.model}, {cfg.eval.num_images or 'all'} test images "
             "per user)", "",
             f"Target: every user's mean PSNR >= {u.psnr_target_db:g} dB and semantic accuracy "
             f">= {u.accuracy_target:g}{fid} (I_0's own accuracy: {ref:.2f}). Frame: the channel "
             "uses of one single-user transmission of the scheme at fc, shared by K users "
             f"(K in {list(u.ks)}); {where}; NOMA weak-user power {u.noma_power:g}. Largest K "
             f"with all users served (0: none). {n_rows} user rows in {seconds / 60:.1f} min.",
             "",
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
    """:func:`served_figure` saved as ``path`` (PNG)."""
    fig = served_figure(best, cfg)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after served_figure chose the backend

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def served_figure(best: dict[tuple, int], cfg: MegConfig) -> Any:
    """Users served against the average SNR: one panel per access (rows: TDMA, NOMA) and channel
    kind (columns), a line per scheme and rate in every panel where it runs. One hue per scheme
    family (the registry's ``hue``: ``X`` and ``X+dm`` share it), ``X+dm`` dashed with hollow
    markers, one marker per rate; the lines are dodged by a fraction of a dB so that equal counts stay visible; one
    legend for the figure."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    kinds = sorted({k[3] for k in best})
    accesses = [a for a in ("tdma", "noma") if any(k[2] == a for k in best)]
    fcs = sorted({k[1] for k in best if k[1] is not None})
    markers = "osD^vP*X"
    snrs = sorted({k[4] for k in best})
    span = (snrs[-1] - snrs[0]) if len(snrs) > 1 else 10.0
    ks = sorted(set(cfg.users.ks))
    fig, axes = plt.subplots(len(accesses), len(kinds), figsize=(5.5 * len(kinds) + 2.5,
                                                                 3.6 * len(accesses)),
                             squeeze=False, sharey=True)
    handles: dict[str, Any] = {}
    for row, access in enumerate(accesses):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            lines = sorted({k[:2] for k in best if k[2:4] == (access, kind)},
                           key=lambda k: (_order(k[0]), str(k[1])))
            for i, (scheme, fc) in enumerate(lines):
                pts = sorted((k[4], v) for k, v in best.items()
                             if k[:4] == (scheme, fc, access, kind))
                dodge = 0.02 * span * (i - (len(lines) - 1) / 2)
                label = scheme + ("" if fc is None else f" fc {fc:g}")
                (h,) = ax.plot([p[0] + dodge for p in pts], [p[1] for p in pts],
                               marker=markers[fcs.index(fc) % len(markers)] if fc in fcs
                               else "o", markersize=5,
                               linestyle="--" if is_dm(scheme) else "-",
                               markerfacecolor="white" if is_dm(scheme) else None,
                               color=scheme_class(scheme).hue, label=label)
                handles.setdefault(label, h)
            ax.set_yscale("symlog", base=2, linthresh=1)
            ax.set_yticks([0] + ks)
            ax.set_yticklabels(["0"] + [str(k) for k in ks])
            ax.set_ylim(-0.2, max(ks) * 1.3)
            ax.set_xticks(snrs)
            ax.set_title(f"{access.upper()}, {kind}", fontsize=10)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel("users served per frame")
            if row == len(accesses) - 1:
                ax.set_xlabel("mean user SNR of the drop (dB)" if cfg.users.placement != "spread"
                              else "average SNR (dB)")
    u = cfg.users
    target = f"PSNR >= {u.psnr_target_db:g} dB, accuracy >= {u.accuracy_target:g}" + (
        "" if u.fid_target is None else f", FID <= {u.fid_target:g}")
    fig.suptitle(f"Users served ({target}; {u.placement} placement)", fontsize=11)
    keys = sorted(handles, key=lambda lab: (_order(lab.split(" ")[0]), lab))
    fig.legend([handles[k] for k in keys], keys, loc="center right", fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / (5.5 * len(kinds) + 2.5), 0.95))
    return fig


def log_to_wandb(cfg: MegConfig, rows: list[dict], served: list[dict]) -> Optional[Path]:
    """One W&B run ``eval-multiuser`` in ``{out_dir}/multiuser/wandb`` (offline unless
    ``wandb.mode`` / ``WANDB_MODE`` say otherwise): tables ``multiuser/served`` (one row per
    frame configuration) and ``multiuser/users`` (one per user), the figure
    ``multiuser/users_served`` and the users served per (scheme, fc, access, channel, SNR) in
    the summary. Returns the offline run's folder (None online or disabled)."""
    import wandb  # noqa: PLC0415 - heavy: imported only when a W&B run is written

    folder = out_dir(cfg)
    logs: dict[str, Any] = {
        "multiuser/served": wandb.Table(columns=SERVED_COLUMNS,
                                        data=[[r.get(c) for c in SERVED_COLUMNS] for r in served]),
        "multiuser/users": wandb.Table(columns=USER_COLUMNS,
                                       data=[[r.get(c) for c in USER_COLUMNS] for r in rows])}
    png = folder / "users_served.png"
    if png.is_file():
        logs["multiuser/users_served"] = wandb.Image(str(png), caption="users served per frame")
    with wandb_run(cfg, folder, name="eval-multiuser", job_type="eval-multiuser") as run:
        run.log(logs)
        for (scheme, fc, access, kind, snr), k in users_served(served).items():
            fc_s = "" if fc is None else f"_fc{fc:g}"
            run.summary[f"served/{scheme}{fc_s}_{access}_{kind}_snr{snr:g}"] = k
        return offline_run_dir(run)


def main(cfg: MegConfig) -> None:
    """`meg eval-multiuser`: the sweep, then one summary line."""
    rows, served = run_multiuser(cfg)
    run_dir = log_to_wandb(cfg, rows, served) if cfg.logger == "wandb" else None
    best = users_served(served)
    top = max(best.items(), key=lambda kv: kv[1]) if best else None
    line = (f"; most: {top[0][0]} {top[0][2]} at {top[0][4]:g} dB serves {top[1]}"
            if top else "")
    print(f"meg eval-multiuser: {len(rows)} user rows, users served (higher is better) in "
          f"{out_dir(cfg) / 'summary.md'}{line}")
    if run_dir is not None:
        print(f"meg eval-multiuser: W&B run in {run_dir} (upload: wandb sync {run_dir})")
