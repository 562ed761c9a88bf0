"""The training-free generative receiver at the UE (``+dm`` schemes): denoise the received latent.

Guo et al., "Diffusion-Driven Semantic Communication" (IEEE TWC 2025): a latent estimate
``z_hat = z + e`` with error variance ``sigma_e^2`` per entry looks, once scaled, like a state of
the diffusion forward process::

    x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps                          (DDPM forward)
    sqrt(abar_t) z_hat = sqrt(abar_t) z + sqrt(abar_t) sigma_e eps'      (the received latent)

The two noise levels agree when abar_t sigma_e^2 = 1 - abar_t, i.e. ``abar_t = 1 / (1 + sigma_e^2)``
(:func:`matched_step`). The UE starts there and runs the remaining prompt-conditioned DDIM steps
(eta = 0, the model's classifier-free guidance) down to t = 0: at most ``ue_steps`` U-Net steps,
spaced like the edge server's schedule. With ``sigma_e^2 = 0`` nothing is run and the plain VAE
decoder sees ``z_hat`` itself.

Latents are in the U-Net's scale (the cached z, before ``1 / scaling_factor``), as everywhere.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def matched_step(alphas_cumprod: Tensor, sigma_e2: Tensor | float) -> Tensor:
    """The training timestep t whose ``abar_t`` is nearest (in log) to ``1 / (1 + sigma_e^2)``.

    ``sigma_e2``: a float or (B,) tensor of latent error variances per entry (>= 0). Returns a
    long tensor of the same shape; -1 where ``sigma_e^2 = 0`` (nothing to denoise).
    """
    s = torch.as_tensor(sigma_e2, dtype=torch.float64)
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"sigma_e2 must be finite and >= 0, got {s.tolist()}")
    target = -torch.log1p(s)  # log abar wanted
    log_abar = torch.log(alphas_cumprod.double())  # (T,), decreasing in t
    t = (log_abar.view(*([1] * s.ndim), -1) - target.unsqueeze(-1)).abs().argmin(-1)
    return torch.where(s > 0, t, torch.full_like(t, -1))


def step_count(t: int, ue_steps: int, es_steps: int, num_train_timesteps: int) -> int:
    """DDIM steps from ``t`` to 0: the edge server's density (``es_steps`` over the whole chain),
    at least 1 and at most ``ue_steps``; 0 when ``t < 0``."""
    if t < 0:
        return 0
    return max(1, min(ue_steps, math.ceil((t + 1) * es_steps / num_train_timesteps)))


@torch.no_grad()
def denoise(pipe, z_hat: Tensor, prompts: Sequence[str], sigma_e2: Tensor | float, *,
            ue_steps: int, es_steps: int, guidance_scale: float) -> tuple[Tensor, Tensor]:
    """The ``+dm`` receiver: refined latents (B, C, h, w) and U-Net steps run per sample (B,).

    ``pipe``: a diffusers StableDiffusionPipeline (its U-Net, text encoder and scheduler's
    ``alphas_cumprod``); ``z_hat`` (B, C, h, w) the latent estimate; ``prompts`` the B prompts the
    UE knows; ``sigma_e2`` float or (B,) error variances. Each sample runs its own schedule from
    its matched step; with guidance > 1 every step evaluates the U-Net twice (conditional and
    unconditional), as on the edge server.
    """
    if ue_steps < 1:
        raise ValueError(f"ue_steps must be >= 1, got {ue_steps}")
    b = z_hat.shape[0]
    if len(prompts) != b:
        raise ValueError(f"{b} latents for {len(prompts)} prompts")
    unet, sched = pipe.unet, pipe.scheduler
    p = next(unet.parameters())
    abar = sched.alphas_cumprod.to(p.device, torch.float64)  # (T,)
    num_t = int(sched.config.num_train_timesteps)
    t0 = matched_step(abar.cpu(), torch.as_tensor(sigma_e2, dtype=torch.float64).expand(b))  # (B,)
    steps = torch.tensor([step_count(int(t), ue_steps, es_steps, num_t) for t in t0])  # (B,)
    out = z_hat.clone()
    active = torch.nonzero(steps > 0).flatten()
    if len(active) == 0:
        return out, steps
    guided = guidance_scale > 1
    cond, uncond = pipe.encode_prompt([prompts[i] for i in active.tolist()], p.device, 1, guided)
    n = steps[active].double().to(p.device)  # (b',)
    t_start = t0[active].double().to(p.device)
    # x_t = sqrt(abar_t) z_hat: the received latent as a diffusion state (module docstring)
    x = z_hat[active].to(p.device, torch.float64) * abar[t0[active].to(p.device)].sqrt().view(
        -1, 1, 1, 1)  # (b', C, h, w)
    for j in range(int(n.max())):
        live = torch.nonzero(j < n).flatten()  # samples with a step left: only they run the U-Net
        t = torch.round(t_start[live] * (1 - j / n[live])).long()  # (l,) this step's timestep
        last = j + 1 >= n[live]  # (l,) the chain ends at abar = 1: the clean latent
        t_next = torch.round(t_start[live] * (1 - (j + 1) / n[live])).long().clamp_min(0)
        a_t = abar[t].view(-1, 1, 1, 1)
        a_next = torch.where(last, torch.ones_like(t_start[live]), abar[t_next]).view(-1, 1, 1, 1)
        xin = x[live].to(p.dtype)
        tt = t.to(p.device)
        if guided:
            e_u, e_c = unet(torch.cat([xin, xin]), torch.cat([tt, tt]),
                            torch.cat([uncond[live], cond[live]])).sample.double().chunk(2)
            eps = e_u + guidance_scale * (e_c - e_u)
        else:
            eps = unet(xin, tt, cond[live]).sample.double()
        x0 = (x[live] - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # predicted clean latent
        x[live] = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps  # DDIM, eta = 0
    out[active] = x.to(out.device, out.dtype)
    return out, steps
