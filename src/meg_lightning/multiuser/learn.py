"""`meg train-alloc`: the learned allocation across the K users of a frame, against equal
shares, channel inversion, the best fixed split and a per-frame optimiser
(:mod:`meg_lightning.multiuser.allocation` has the model; docs/MULTIUSER.md the results).

For every access in ``users.accesses`` and objective in ``users.objectives``, a TorchRL PPO
policy (the single-user power agent's loop, :func:`meg_lightning.power.train.ppo_train`, and
its Gaussian head, with the ``ppo.*`` optimiser settings; ``users.alloc_frames`` frames) learns
the allocation of K = ``users.k`` users on the quality model of the latents' own spectrum (the
training split of the latent cache). Every policy then acts on the same ``users.alloc_eval_frames``
held-out frames (another seed).

Outputs under ``{out_dir}/alloc/``: ``results.csv`` (one row per access, objective and policy:
the objective's mean and 95% interval, its paired difference to equal shares and to the best
fixed split with intervals, the worst and mean user, Jain's index), ``summary.md``, ``alloc.png``
and per policy ``{access}-{objective}/checkpoint.pt`` (written after every batch; a rerun resumes
it, and trains nothing once it holds all frames).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torch.distributions import Normal
from torchrl.envs import RewardScaling, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator

from meg_lightning.codecs.base import code_length
from meg_lightning.codecs.klt import LinearCode
from meg_lightning.config import MegConfig, config_hash, save_resolved, to_dict
from meg_lightning.errors import UserError
from meg_lightning.evaluation.inputs import (
    _default_datamodule,
    _default_vae,
    test_latents,
    train_latents,
)
from meg_lightning.generation import decode_latents
from meg_lightning.io import atomic_write_text, clean_tmp, csv_text
from meg_lightning.metrics.image import psnr_per_image
from meg_lightning.multiuser.allocation import (
    AllocationEnv,
    FrameSpec,
    LinearQuality,
    allocation,
    best_fixed_action,
    draw_frames,
    equal_action,
    evaluate,
    inversion_action,
    objective,
    optimise_actions,
    spec_from,
    summarise,
    user_links,
)
from meg_lightning.power.evaluate import mean_ci
from meg_lightning.power.train import gaussian_params, make_logger, ppo_train
from meg_lightning.runtime import torch_threads

COLUMNS = ["access", "objective", "k", "policy", "objective_db", "objective_lo", "objective_hi",
           "vs_equal_db", "vs_equal_lo", "vs_equal_hi", "vs_best_fixed_db", "vs_best_fixed_lo",
           "vs_best_fixed_hi", "mean_user_db", "worst_user_db", "jain", "image_psnr_db",
           "image_psnr_lo", "image_psnr_hi", "image_vs_equal_db", "image_vs_equal_lo",
           "image_vs_equal_hi", "image_worst_psnr_db", "train_seconds", "frames"]
#: the most training frames the best fixed split is searched on (else as many as held out)
SEARCH_FRAMES = 2048


def out_dir(cfg: MegConfig) -> Path:
    return Path(cfg.out_dir) / "alloc"


def build_agent(spec: FrameSpec, hidden: int) -> tuple[ProbabilisticActor, ValueOperator, Any]:
    """(actor, critic, the actor's (loc, scale) module): a Gaussian over the action logits whose
    mean starts at 0, the equal allocation."""
    params = gaussian_params(spec.k, spec.action_dim, hidden)
    actor = ProbabilisticActor(params, in_keys=["loc", "scale"], out_keys=["action"],
                               distribution_class=Normal, return_log_prob=True)
    critic = ValueOperator(MLP(in_features=spec.k, out_features=1, num_cells=[hidden, hidden],
                               activation_class=nn.Tanh), in_keys=["critic_observation"])
    return actor, critic, params


def train_policy(cfg: MegConfig, spec: FrameSpec, quality: LinearQuality, kind: str,
                 folder: Path) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) one allocation policy; returns (its deterministic action function of
    gamma, {train_seconds, frames})."""
    users = cfg.users
    p = dataclasses.replace(cfg.ppo, num_envs=cfg.ppo.frames_per_batch,
                            total_frames=users.alloc_frames, num_blocks=1)
    run = config_hash({"spec": dataclasses.asdict(spec), "kind": kind, "seed": cfg.seed,
                       "hidden": p.hidden})
    path = folder / "checkpoint.pt"
    ckpt = None
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - an unreadable file is the user's to fix
            raise UserError(f"{str(path)!r} could not be read ({type(e).__name__}): delete it to "
                            "train again, or use another out_dir") from None
    if ckpt is not None and (not isinstance(ckpt, dict) or ckpt.get("run") != run):
        raise UserError(f"{str(path)!r} was trained with other users.* settings: use another "
                        "out_dir (or delete it to train again)")
    torch.manual_seed(cfg.seed)
    base = AllocationEnv(spec, quality, kind, num_envs=p.num_envs, seed=cfg.seed)
    if ckpt:
        scale = ckpt["reward_scale"]
    else:
        gamma = draw_frames(spec, p.num_envs, torch.Generator().manual_seed(cfg.seed + 17))
        eq = evaluate(spec, quality, gamma, kind, {"equal": equal_action(spec, 1)[0]})
        scale = 1.0 / max(abs(float(eq["equal"]["objective"].mean())), 1e-6)
    env = TransformedEnv(base, RewardScaling(loc=0.0, scale=scale))
    actor, critic, params = build_agent(spec, p.hidden)
    folder.mkdir(parents=True, exist_ok=True)
    clean_tmp(folder)
    logger = make_logger(cfg, folder / "logs", f"alloc-{spec.access}-{kind}-{run[:8]}")
    frames, seconds = ppo_train(
        env, base, actor, critic, actor, p, folder=folder, seed=cfg.seed, episode_len=1,
        ckpt=ckpt, logger=logger, desc=f"train-alloc {spec.access} {kind}", track="objective",
        what=f"users.objectives={kind!r}",
        extra={"run": run, "reward_scale": scale, "config": to_dict(cfg)})
    params.eval()

    @torch.no_grad()
    def act(gamma: torch.Tensor) -> torch.Tensor:
        td = TensorDict({"observation": torch.log10(gamma).float()}, batch_size=[len(gamma)])
        return params(td)["loc"].double()

    return act, {"train_seconds": seconds, "frames": frames}



@torch.no_grad()
def image_psnr(spec: FrameSpec, code: LinearCode, gamma: Tensor, action: Tensor, z: Tensor,
               i_0: Tensor, decode_image: Callable[[Tensor], Tensor], seed: int) -> Tensor:
    """(F, K) PSNR (dB) of the images the users of F frames receive under ``action``: user u of
    frame f sends test latent ``(f K + u) mod len(z)`` with the linear code at its whole number
    of symbols (the allocation's, rounded; none: the code's prior mean is decoded) over AWGN at
    its SINR (its block's gain known; NOMA's partner as Gaussian noise), then the VAE renders
    it. ``code``: a linear code holding all the components (``fc`` 1)."""
    act = action.expand(gamma.shape[0], -1) if action.ndim == 1 else action
    m, sinr = user_links(spec, gamma, allocation(spec, act))
    gen = torch.Generator().manual_seed(seed)
    n_img = len(z)
    z_hat, refs = [], []
    for f in range(gamma.shape[0]):
        for u in range(spec.k):
            i = (f * spec.k + u) % n_img
            k = min(int(round(float(m[f, u]))), code.numel)  # more uses than |z|: idle
            snr = float(sinr[f, u])
            if k < 1 or snr <= 0:
                z_hat.append(code.mean.reshape(1, *z.shape[1:]))
            else:
                c = LinearCode(code.mean, code.eigvecs, torch.as_tensor(code.eigvals),
                               z.shape[1:], k, code.total_var)
                snr_db = 10 * math.log10(snr)
                x = c.encode(z[i:i + 1].float(), snr_db)
                x_hat = x + torch.randn(x.shape, generator=gen) / math.sqrt(snr)
                z_hat.append(c.decode(x_hat, snr_db))
            refs.append(i)
    images = torch.cat([decode_image(zz) for zz in torch.cat(z_hat).split(64)])
    psnr, _ = psnr_per_image(images.float(), i_0[refs].float())
    return psnr.reshape(gamma.shape[0], spec.k)


def run(cfg: MegConfig, *, quality: Optional[LinearQuality] = None,
        images: Optional[tuple[LinearCode, Tensor, Callable[[Tensor], Tensor]]] = None,
        progress: bool = True) -> list[dict[str, Any]]:
    """Every (access, objective): train, then compare all policies on held-out frames (and, for
    ``users.alloc_image_frames`` of them, on the images the users receive); writes the outputs
    and returns the result rows. ``quality`` and ``images`` (the linear code at fc 1, test
    latents, the VAE decoder) can be injected; else they come from the latent cache."""
    users = cfg.users
    if quality is None or (images is None and users.alloc_image_frames > 0):
        dm = _default_datamodule(cfg)
        z_train = train_latents(dm)
        quality = quality or LinearQuality.from_latents(z_train)
        if images is None and users.alloc_image_frames > 0:
            vae = _default_vae(cfg, torch.device("cpu")).eval()
            images = (LinearCode.fit(z_train, 1.0), test_latents(dm, None)[0],
                      lambda zz: decode_latents(vae, zz).float())
    if images is not None and users.alloc_image_frames > 0:
        code, z_test, decode_image = images
        i_0 = torch.cat([decode_image(zz) for zz in z_test.split(64)]).float()
    n_symbols = code_length(users.alloc_fc, quality.n)
    folder = out_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, folder)
    rows: list[dict[str, Any]] = []
    for access in users.accesses:
        spec = spec_from(users, access, n_symbols)
        held = draw_frames(spec, users.alloc_eval_frames,
                           torch.Generator().manual_seed(cfg.seed + 1_000_003))
        search = draw_frames(spec, min(SEARCH_FRAMES, users.alloc_eval_frames),
                             torch.Generator().manual_seed(cfg.seed + 7))
        for kind in users.objectives:
            t0 = time.perf_counter()
            act, info = train_policy(cfg, spec, quality, kind, folder / f"{access}-{kind}")
            actions = {"equal": equal_action(spec, 1)[0],
                       "inversion": inversion_action(spec, held),
                       "best_fixed": best_fixed_action(spec, quality, search, kind),
                       "ppo": act(held)}
            actions["per_frame"] = optimise_actions(spec, quality, held, kind, actions["ppo"])
            results = evaluate(spec, quality, held, kind, actions)
            image = {}
            if images is not None and users.alloc_image_frames > 0:
                f = min(users.alloc_image_frames, len(held))
                image = {name: image_psnr(spec, code, held[:f], act if act.ndim == 1 else act[:f],
                                          z_test, i_0, decode_image, cfg.seed)
                         for name, act in actions.items()}
            for r in summarise(results, mean_ci):
                r.update(access=access, objective=kind, k=spec.k)
                if r["policy"] == "ppo":
                    r.update(info)
                if image:
                    r.update(image_columns(image, r["policy"], kind))
                rows.append(r)
            if progress:
                ppo = next(r for r in rows[::-1] if r["policy"] == "ppo")
                print(f"train-alloc: {access} {kind}: ppo {ppo['objective_db']:.3f} dB, "
                      f"{ppo['vs_equal_db']:+.3f} dB vs equal "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write_outputs(cfg, rows, n_symbols)
    return rows



def image_columns(image: dict[str, Tensor], name: str, kind: str) -> dict[str, float]:
    """The image check of one policy: its objective over the users' PSNR (mean or worst user
    per frame) with its interval, and the paired difference to equal shares."""
    obj = {k: objective(v, kind) for k, v in image.items()}
    m, lo, hi = mean_ci(obj[name])
    out = {"image_psnr_db": m, "image_psnr_lo": lo, "image_psnr_hi": hi,
           "image_worst_psnr_db": float(image[name].amin(-1).mean())}
    if name != "equal":
        d, dlo, dhi = mean_ci(obj[name] - obj["equal"])
        out.update(image_vs_equal_db=d, image_vs_equal_lo=dlo, image_vs_equal_hi=dhi)
    return out


def _ci(r: dict[str, Any], key: str) -> str:
    if r.get(f"{key}_db") is None or f"{key}_lo" not in r:
        return "-"
    return f"{r[f'{key}_db']:+.3f} [{r[f'{key}_lo']:+.3f}, {r[f'{key}_hi']:+.3f}]"


def summary(cfg: MegConfig, rows: list[dict[str, Any]], n_symbols: int) -> str:
    u = cfg.users
    lines = [f"# Learned allocation across K = {u.k} users ({cfg.model})", "",
             f"A frame of {n_symbols} real channel uses (fc {u.alloc_fc:g}) and its energy; users' "
             f"average SNRs uniform in [{u.alloc_snr_db[0]:g}, {u.alloc_snr_db[1]:g}] dB, "
             f"{u.alloc_channel} gains known at the transmitter; quality = the optimal linear "
             "code's latent signal-to-distortion ratio (dB) at the user's symbols and SINR. "
             f"{u.alloc_eval_frames} held-out frames; 95% intervals; differences are paired "
             "(same frames).", "",
             "| access | objective | policy | objective (dB) | vs equal (dB) | vs best fixed (dB) "
             "| worst user (dB) | Jain | image objective, PSNR (dB) | image vs equal (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        img = (f"{r['image_psnr_db']:.2f} [{r['image_psnr_lo']:.2f}, {r['image_psnr_hi']:.2f}]"
               if "image_psnr_db" in r else "-")
        lines.append(f"| {r['access']} | {r['objective']} | {r['policy']} | "
                     f"{r['objective_db']:.3f} [{r['objective_lo']:.3f}, {r['objective_hi']:.3f}]"
                     f" | {_ci(r, 'vs_equal')} | {_ci(r, 'vs_best_fixed')} | "
                     f"{r['worst_user_db']:.3f} | {r['jain']:.3f} | {img} | "
                     f"{_ci(r, 'image_vs_equal')} |")
    lines += ["", *verdicts(rows)]
    if any("image_psnr_db" in r for r in rows):
        lines += ["", f"Image check: on the first {u.alloc_image_frames} held-out frames every "
                  "user sends its own test latent with the linear code at its allocated (rounded) "
                  "symbols and SINR, and the VAE renders it; the objective is then taken over the "
                  "users' PSNR against their perfect images (mean, or worst user, per frame)."]
    return "\n".join(lines) + "\n"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per (access, objective): does PPO beat equal shares beyond the interval, and
    where does it stand against the best fixed split and the per-frame optimiser."""
    out = []
    for r in rows:
        if r["policy"] != "ppo":
            continue
        per_frame = next((x for x in rows if x["policy"] == "per_frame"
                          and (x["access"], x["objective"]) == (r["access"], r["objective"])), None)
        beats = r["vs_equal_lo"] > 0
        gap = (f"; the per-frame optimiser reaches {per_frame['objective_db']:.3f} dB"
               if per_frame else "")
        out.append(f"- {r['access']} / {r['objective']}: PPO "
                   f"{'beats' if beats else 'does not beat'} equal shares by "
                   f"{_ci(r, 'vs_equal')} dB, and is {_ci(r, 'vs_best_fixed')} dB against the "
                   f"best fixed split{gap}.")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """The objective of every policy with its interval, a panel per (access, objective)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = list(dict.fromkeys((r["access"], r["objective"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (access, kind) in zip(axes[0], panels):
        rs = [r for r in rows if (r["access"], r["objective"]) == (access, kind)]
        x = range(len(rs))
        ax.bar(x, [r["objective_db"] for r in rs],
               yerr=[[r["objective_db"] - r["objective_lo"] for r in rs],
                     [r["objective_hi"] - r["objective_db"] for r in rs]],
               color=["tab:red" if r["policy"] == "ppo" else "tab:gray" for r in rs], capsize=3)
        ax.set_xticks(list(x), [r["policy"] for r in rs], rotation=30, fontsize=8)
        ax.set_title(f"{access}, {kind}", fontsize=9)
        ax.set_ylabel("objective (latent SDR, dB)")
        lo = min(r["objective_lo"] for r in rs)
        hi = max(r["objective_hi"] for r in rs)
        ax.set_ylim(max(lo - 0.2 * (hi - lo + 1e-9), 0), hi + 0.1 * (hi - lo + 1e-9))
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_outputs(cfg: MegConfig, rows: list[dict[str, Any]], n_symbols: int) -> None:
    folder = out_dir(cfg)
    atomic_write_text(folder / "results.csv", csv_text(rows, COLUMNS))
    atomic_write_text(folder / "summary.md", summary(cfg, rows, n_symbols))
    plot(rows, folder / "alloc.png")


def main(cfg: MegConfig) -> list[dict[str, Any]]:
    """`meg train-alloc`, then one summary line."""
    with torch_threads(1):
        rows = run(cfg)
    ppo = [r for r in rows if r["policy"] == "ppo"]
    parts = ", ".join(f"{r['access']}/{r['objective']} {r['vs_equal_db']:+.2f} dB" for r in ppo)
    print(f"meg train-alloc: PPO against equal shares (higher is better): {parts}; "
          f"{out_dir(cfg) / 'summary.md'}")
    return rows
