"""One cell of the sweep: its scheme run over the test latents batch by batch, against the
perfect images I_0, into the cell's metrics (PSNR, FID with its bootstrap interval, LPIPS, CLIP
score, latent NMSE and MSE, semantic accuracy; defined in :mod:`.sweep`'s docstring), and its
first ``EXAMPLES`` images saved side by side as one PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from meg_lightning.evaluation.cells import Cell
from meg_lightning.evaluation.inputs import judge_batch
from meg_lightning.io import atomic_path
from meg_lightning.metrics import (
    PSNR_CAP_DB,
    extract_features,
    feature_name,
    fid_with_ci,
    latent_mse_per_sample,
    latent_nmse_per_sample,
    psnr_per_image,
)
from meg_lightning.schemes import Scheme
from meg_lightning.schemes.digital_image import to_uint8

#: test images per cell saved as PNG under ``examples/`` (side by side)
EXAMPLES = 8


def save_png(path: Path, images: Tensor) -> None:
    """Images (n, 3, H, W) in [0, 1] side by side as one (H, n W) PNG."""
    strip = np.concatenate(list(to_uint8(images)), axis=1)  # (H, n W, 3)
    with atomic_path(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")


def mean_std(name: str, parts: list[Tensor]) -> dict:
    """``{name: mean, name_std: standard deviation}`` of the per-image values in ``parts``
    (nan when there are none; std 0 for one image, as ``psnr_std``)."""
    if not parts:
        return {name: float("nan"), f"{name}_std": float("nan")}
    v = torch.cat(parts)
    return {name: float(v.mean()), f"{name}_std": float(v.std()) if len(v) > 1 else 0.0}


@torch.no_grad()
def run_cell(cell: Cell, scheme: Scheme, channel, z: Tensor, i_0: Tensor, feats_0: Tensor, *,
             extractor, batch_size: int, seed: int, bootstrap: int, device,
             index: Optional[Tensor] = None, judge=None,
             prompts: Optional[list[str]] = None, lpips=None, clip=None,
             text_emb: Optional[Tensor] = None) -> tuple[dict, Tensor]:
    """Metrics of one cell (a results row without the bookkeeping columns) and its first
    ``EXAMPLES`` images; ``judge(images, index[batch])`` -> (b,) bool gives semantic accuracy;
    ``prompts[i]``: the prompt of test image i (for the schemes that send or use it);
    ``lpips(images, i_0)`` -> (b,) gives LPIPS (:class:`meg_lightning.metrics.LPIPS`), and
    ``clip`` (:class:`meg_lightning.metrics.ClipScorer`) with ``text_emb[i]``, the embedding of
    test image i's prompt, the CLIP score; their columns are nan when they are None."""
    gen = torch.Generator(device=device).manual_seed(seed)
    psnr, capped, nmse, lmse, feats, sem, info = [], [], [], [], [], [], {}
    lp, cs = [], []
    first, symbols = [], 0
    for s in range(0, len(z), batch_size):
        zb = z[s:s + batch_size].to(device)  # (b, C, h, w)
        ib = i_0[s:s + batch_size].to(device)  # (b, 3, H, W)
        pb = prompts[s:s + batch_size] if prompts is not None else None
        out = scheme(zb, ib, channel=channel, generator=gen, prompts=pb)
        images = out.images.float().clamp(0, 1)
        p, cp = psnr_per_image(images.cpu(), ib.cpu())
        psnr.append(p)
        capped.append(cp)
        if out.z_hat is not None:
            nmse.append(latent_nmse_per_sample(out.z_hat.cpu(), zb.cpu()))
            lmse.append(latent_mse_per_sample(out.z_hat.cpu(), zb.cpu()))
        feats.append(extract_features(extractor, images))
        if judge is not None:
            sem.append(judge_batch(judge, images, index[s:s + batch_size], extractor, feats[-1]))
        if lpips is not None:
            lp.append(lpips(images, ib).double().cpu())
        if clip is not None:
            cs.append(clip.score(clip.encode_images(images),
                                 text_emb[s:s + batch_size]).double().cpu())
        for k, v in out.info.items():
            info.setdefault(k, []).append(v.cpu())
        if sum(len(f) for f in first) < EXAMPLES:
            first.append(images[:EXAMPLES].cpu())
        symbols = out.symbols
    psnr_t = torch.cat(psnr)
    fid = fid_with_ci(feats_0, torch.cat(feats), bootstrap=bootstrap, seed=seed,
                      features=feature_name(extractor)) if len(z) >= 2 else None
    nan = float("nan")
    row = {
        "symbols": symbols, "channel_uses": math.ceil(symbols / 2), "n_images": len(z),
        "psnr_db": float(psnr_t.mean()), "psnr_std": float(psnr_t.std()) if len(z) > 1 else 0.0,
        "psnr_capped": int(torch.cat(capped).sum()), "psnr_cap_db": PSNR_CAP_DB,
        "latent_nmse": float(torch.cat(nmse).mean()) if nmse else nan,
        "latent_mse": float(torch.cat(lmse).mean()) if lmse else nan,
        "semantic_accuracy": float(torch.cat(sem).float().mean()) if sem else nan,
    }
    row.update(fid.as_dict() if fid else {"fid": nan, "fid_n_images": len(z)})
    row.update(mean_std("lpips", lp), lpips_net=getattr(lpips, "name", None))
    row.update(mean_std("clip_score", cs), clip_model=getattr(clip, "name", None))
    for k, v in info.items():
        row[k] = float(torch.cat(v).double().mean())
    return row, torch.cat(first)[:EXAMPLES]
