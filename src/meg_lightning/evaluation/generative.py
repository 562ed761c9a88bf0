"""Schemes in which the UE runs the generative model: ``X+dm`` receivers and ``prompt``.

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

``prompt`` (:class:`PromptScheme`, the "generative network layer"): the ES sends the prompt
(UTF-8, or deflate with a preset dictionary of the training prompts' words when that is
shorter: :func:`prompt_bits`) and the 64-bit noise seed
over an ideal capacity-achieving code within the symbol budget of ``meg`` at the same fc; the UE
runs the whole generation (text encoder, every DDIM step, VAE decoder) and, when the bits
arrive, gets I_0 exactly. All or nothing per channel realisation (block fading: per image);
on an outage the UE has nothing to generate from and shows a mid-grey image
(:data:`~meg_lightning.evaluation.schemes.DIGITAL_FAILURE_VALUE`), and z_hat is the zero latent
(the prior mean).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from typing import Optional, Sequence

import torch
from torch import Tensor

from meg_lightning.evaluation.registry import DM_SUFFIX, register
from meg_lightning.evaluation.schemes import (DIGITAL_FAILURE_VALUE, BaseScheme, SchemeOutput,
                                              capacity_bits, threshold_snr_db)

#: bits of the noise seed that `prompt` sends (the cache's per-sample seeds are 63-bit integers)
SEED_BITS = 64


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

    @torch.no_grad()
    def sigma_e2(self, *, channel, snr_db: Optional[float]) -> float:
        """Mean squared latent error of the base scheme at this channel and SNR, measured on the
        calibration (training) latents with a generator of its own (cached per cell)."""
        key = (getattr(channel, "kind", "awgn"), getattr(channel, "num_blocks", 1), snr_db)
        if key not in self._sigma:
            device = self.z_cal.device
            digest = hashlib.sha256(f"meg-dm:{self.calibration_seed}:{key}".encode()).digest()
            g = torch.Generator(device=device).manual_seed(
                int.from_bytes(digest[:8], "little") & (2**63 - 1))
            z_hat, _ = self.base.transmit(self.z_cal, channel=channel, snr_db=snr_db, generator=g)
            self._sigma[key] = float(((z_hat.float() - self.z_cal.float()) ** 2).mean())
        return self._sigma[key]

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel, snr_db, generator, prompts=None) -> SchemeOutput:
        from meg_lightning.generation.receiver import denoise

        if prompts is None or len(prompts) != len(z):
            raise ValueError(f"{self.name} needs the prompt of every image (the UE knows it)")
        self.z_cal = self.z_cal.to(z.device)
        z_hat, symbols = self.base.transmit(z, channel=channel, snr_db=snr_db, generator=generator)
        s2 = self.sigma_e2(channel=channel, snr_db=snr_db)
        z_ref, steps = denoise(self.pipeline(), z_hat, list(prompts), s2, ue_steps=self.ue_steps,
                               es_steps=self.es_steps, guidance_scale=self.guidance_scale)
        evals = steps.double() * (2 if self.guidance_scale > 1 else 1)
        return SchemeOutput(images=self.decode_image(z_ref), symbols=symbols, z_hat=z_ref,
                            info={"ue_unet_evals": evals,
                                  "dm_sigma_e2": torch.full((len(z),), s2, dtype=torch.float64)})


def prompt_dictionary(train_prompts: Sequence[str], limit: int = 32768) -> bytes:
    """A preset dictionary for deflate from the *training* prompts: their distinct words, most
    frequent last (deflate finds recent matches cheapest), at most ``limit`` bytes (deflate's
    window). Both ends hold it, like a tokenizer's vocabulary; no test prompt is in it."""
    counts: dict[str, int] = {}
    for p in train_prompts:
        for w in p.split():
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (counts[w], w))
    return " ".join(words).encode("utf-8")[-limit:]


def prompt_bits(prompt: str, zdict: bytes = b"") -> int:
    """Bits of one prompt as `prompt` sends it: 1 flag bit, then the UTF-8 bytes or their raw
    deflate stream (zlib level 9, with the preset dictionary ``zdict`` when given), whichever is
    shorter; plus the SEED_BITS-bit seed."""
    raw = prompt.encode("utf-8")
    comp = (zlib.compressobj(9, zlib.DEFLATED, -15, zdict=zdict) if zdict
            else zlib.compressobj(9, zlib.DEFLATED, -15))
    deflated = comp.compress(raw) + comp.flush()
    return 1 + 8 * min(len(raw), len(deflated)) + SEED_BITS


@register
class PromptScheme(BaseScheme):
    """``prompt``: prompt + seed over an ideal code in meg's budget; the UE regenerates I_0.

    With ``regenerate`` ((prompts, seeds) -> latents) the UE really runs the generation from
    (prompt, seed) and decodes it with ``decode_image``; the test checks that this gives the
    cached z bit for bit, hence I_0. By default the sweep uses z and I_0 themselves (the same
    latent, without the cost) and counts the UE's U-Net evaluations.
    """

    name = "prompt"
    uses_fc = True
    runs_generator = True

    @classmethod
    def compute(cls, parts, fc):
        # the UE generates (what its device must be able to run, per delivered image); the ES
        # only forwards the prompt and the seed
        evals = float(parts.es_steps * parts.evals_per_step)
        return evals, parts.text_encoder + evals * parts.unet_eval + parts.vae_decode, 0.0

    def __init__(self, symbols: int, *, kind: str = "awgn", num_blocks: int = 1,
                 fc: Optional[float] = None, es_steps: int = 25, guidance_scale: float = 1.0,
                 regenerate=None, decode_image=None, zdict: bytes = b""):
        self.symbols, self.kind, self.num_blocks, self.fc = int(symbols), kind, num_blocks, fc
        self.zdict = zdict
        self.es_steps, self.guidance_scale = es_steps, guidance_scale
        self.regenerate = regenerate  # None or (prompts, seeds) -> latents (b, C, h, w)
        self.decode_image = decode_image

    @classmethod
    def build(cls, ctx, fc, kind):
        from meg_lightning.codec.components import code_length

        gen = ctx.cfg.generation
        return cls(code_length(fc, math.prod(ctx.latent_shape)), kind=kind,
                   num_blocks=ctx.cfg.channel.num_blocks, fc=fc, es_steps=gen.num_inference_steps,
                   guidance_scale=gen.guidance_scale,
                   zdict=prompt_dictionary(ctx.train_prompts()))

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel=None, snr_db, generator, prompts=None,
                 seeds: Optional[Sequence[int]] = None) -> SchemeOutput:
        if prompts is None or len(prompts) != len(z):
            raise ValueError("prompt needs the prompt of every image")
        bits = torch.tensor([float(prompt_bits(p, self.zdict)) for p in prompts],
                            dtype=torch.float64)
        ok = bits <= capacity_bits(self.symbols, self.kind, self.num_blocks, snr_db, len(z),
                                   generator)
        images = torch.full_like(i_0, DIGITAL_FAILURE_VALUE)
        z_hat = torch.zeros_like(z)
        idx = torch.nonzero(ok).flatten().tolist()
        if idx:
            if self.regenerate is not None:
                if seeds is None or self.decode_image is None:
                    raise ValueError("regenerating at the UE needs every seed and decode_image")
                z_hat[idx] = self.regenerate([prompts[i] for i in idx],
                                             [seeds[i] for i in idx]).to(z_hat)
                images[idx] = self.decode_image(z_hat[idx]).to(images)
            else:
                z_hat[idx], images[idx] = z[idx], i_0[idx]
        thr = torch.tensor([threshold_snr_db(b, self.symbols) for b in bits.tolist()],
                           dtype=torch.float64)
        return SchemeOutput(images=images, symbols=self.symbols, z_hat=z_hat,
                            info={"success": ok.double(), "payload_bits": bits,
                                  "threshold_snr_db": thr})
