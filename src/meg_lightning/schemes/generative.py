"""The generative receiver ``X+dm``: the UE runs the prompt-conditioned generator on X's latent.

``X+dm`` (:class:`DiffusionReceiver`) wraps any scheme X that delivers a latent estimate
(``feature``, ``meg``, ``linear``, ...): the UE knows the prompt (it sent it), treats
z_hat = z + e as a diffusion state at the step matched to the error variance sigma_e^2 and runs
the remaining prompt-conditioned DDIM steps, at most ``eval.ue_steps``
(:mod:`meg_lightning.generation.receiver`, Guo et al., IEEE TWC 2025). sigma_e^2 is the scheme's
known distortion at the cell's channel and SNR: the mean squared latent error of X measured on
``eval.dm_calibration`` *training* latents sent through the same kind of channel at that SNR
(for ``feature`` on AWGN this is the closed form P_z 10^(-SNR/10) up to sampling error; for
``meg`` the codec's distortion at that SNR). One value per cell: with block fading the error of
one image depends on its own fades, which this estimate averages over.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from meg_lightning.generation.receiver import denoise
from meg_lightning.schemes.base import DM_SUFFIX, BaseScheme, SchemeOutput, link_snr


class DiffusionReceiver(BaseScheme):
    """``X+dm``: X's transmission, then the training-free diffusion receiver at the UE."""

    yields_latent = False  # no ``+dm+dm``

    def __init__(self, base, pipeline, z_cal: Tensor, *, ue_steps: int, es_steps: int,
                 guidance_scale: float, calibration_seed: int = 0):
        self.base, self.pipeline = base, pipeline
        self.name, self.fc = base.name + DM_SUFFIX, base.fc
        self.uses_fc = base.uses_fc
        self.z_cal = z_cal
        self.ue_steps, self.es_steps, self.guidance_scale = ue_steps, es_steps, guidance_scale
        self.calibration_seed = calibration_seed
        self._sigma: dict[tuple, float] = {}

    @classmethod
    def wrap(cls, base, ctx) -> "DiffusionReceiver":
        ev, gen = ctx.cfg.eval, ctx.cfg.generation
        return cls(base, ctx.pipeline, ctx.z_train()[: ev.dm_calibration], ue_steps=ev.ue_steps,
                   es_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                   calibration_seed=ctx.cfg.seed)

    @property
    def decode_image(self):
        return self.base.decode_image

    def compute(self, parts, ue_steps_run: float = 0.0) -> tuple[float, float, float]:
        """X's cost plus, at the UE, the text encoder and ``ue_steps_run`` guided U-Net steps
        (the DDIM steps the receiver actually ran per image, the cell's mean)."""
        _, ue, es = self.base.compute(parts)
        evals = float(ue_steps_run) * parts.evals_per_step
        ue += evals * parts.unet_eval + (parts.text_encoder if ue_steps_run > 0 else 0.0)
        return evals, ue, es

    @torch.no_grad()
    def sigma_e2(self, *, channel) -> float:
        """Mean squared latent error of the base scheme at this channel and SNR, measured on the
        calibration (training) latents with a generator of its own (cached per cell)."""
        # a link that carries other users' signals names the plain channel to calibrate on
        channel = getattr(channel, "calibration", channel)
        key = (channel.kind, channel.num_blocks, link_snr(channel))
        if key not in self._sigma:
            device = self.z_cal.device
            digest = hashlib.sha256(f"meg-dm:{self.calibration_seed}:{key}".encode()).digest()
            g = torch.Generator(device=device).manual_seed(
                int.from_bytes(digest[:8], "little") & (2**63 - 1))
            z_hat, _ = self.base.transmit(self.z_cal, channel=channel, generator=g)
            self._sigma[key] = float(((z_hat.float() - self.z_cal.float()) ** 2).mean())
        return self._sigma[key]

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel, generator, prompts=None) -> SchemeOutput:
        if prompts is None or len(prompts) != len(z):
            raise ValueError(f"{self.name} needs the prompt of every image (the UE knows it)")
        self.z_cal = self.z_cal.to(z.device)
        z_hat, symbols = self.base.transmit(z, channel=channel, generator=generator)
        s2 = self.sigma_e2(channel=channel)
        z_ref, steps = denoise(self.pipeline(), z_hat, list(prompts), s2, ue_steps=self.ue_steps,
                               es_steps=self.es_steps, guidance_scale=self.guidance_scale)
        evals = steps.double() * (2 if self.guidance_scale > 1 else 1)
        return SchemeOutput(images=self.decode_image(z_ref), symbols=symbols, z_hat=z_ref,
                            info={"ue_unet_evals": evals,
                                  "dm_sigma_e2": torch.full((len(z),), s2, dtype=torch.float64)})


