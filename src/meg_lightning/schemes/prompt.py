"""``prompt`` (the "generative network layer", paper ref. [23]): the ES sends the prompt and the
noise seed; the UE runs the whole generation.

The prompt goes as UTF-8, or deflate with a preset dictionary of the training prompts' words when
that is shorter (:func:`prompt_bits`), with the 64-bit noise seed, over an ideal
capacity-achieving code within the symbol budget of the learned codec at the same fc; the UE runs
the whole generation (text encoder, every DDIM step, VAE decoder) and, when the bits arrive, gets
I_0 exactly. All or nothing per channel realisation (block fading: per image); on an outage the
UE has nothing to generate from and shows a mid-grey image
(:data:`~meg_lightning.schemes.base.FAILURE_VALUE`), and z_hat is the zero latent (the prior mean).
"""

from __future__ import annotations

import zlib
from typing import Optional, Sequence

import torch

from meg_lightning.codecs.base import code_length
from meg_lightning.schemes.base import FAILURE_VALUE, SCHEMES, BaseScheme, SchemeOutput
from meg_lightning.schemes.ideal import capacity_bits, threshold_snr_db

#: bits of the noise seed that `prompt` sends (the cache's per-sample seeds are 63-bit integers)
SEED_BITS = 64


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


@SCHEMES.register("prompt")
class PromptScheme(BaseScheme):
    """``prompt``: prompt + seed over an ideal code in meg's budget; the UE regenerates I_0.

    With ``regenerate`` ((prompts, seeds) -> latents) the UE really runs the generation from
    (prompt, seed) and decodes it with ``decode_image``; the test checks that this gives the
    cached z bit for bit, hence I_0. By default the sweep uses z and I_0 themselves (the same
    latent, without the cost) and counts the UE's U-Net evaluations.
    """

    order = 80
    hue = "tab:purple"
    uses_fc = True
    runs_generator = True
    digital = True
    channel_code = "ideal"
    regenerates = True

    def compute(self, parts):
        # the UE generates (what its device must be able to run, per delivered image); the ES
        # only forwards the prompt and the seed
        evals = float(parts.es_steps * parts.evals_per_step)
        return evals, parts.text_encoder + evals * parts.unet_eval + parts.vae_decode, 0.0

    def __init__(self, symbols: int, *, fc: Optional[float] = None, es_steps: int = 25,
                 guidance_scale: float = 1.0, regenerate=None, decode_image=None,
                 zdict: bytes = b""):
        self.symbols, self.fc = int(symbols), fc
        self.zdict = zdict
        self.es_steps, self.guidance_scale = es_steps, guidance_scale
        self.regenerate = regenerate  # None or (prompts, seeds) -> latents (b, C, h, w)
        self.decode_image = decode_image

    @classmethod
    def build(cls, ctx, fc):
        gen = ctx.cfg.generation
        return cls(code_length(fc, ctx.numel), fc=fc, es_steps=gen.num_inference_steps,
                   guidance_scale=gen.guidance_scale,
                   zdict=prompt_dictionary(ctx.train_prompts()))

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel, generator, prompts=None,
                 seeds: Optional[Sequence[int]] = None) -> SchemeOutput:
        if prompts is None or len(prompts) != len(z):
            raise ValueError("prompt needs the prompt of every image")
        bits = torch.tensor([float(prompt_bits(p, self.zdict)) for p in prompts],
                            dtype=torch.float64)
        ok = bits <= capacity_bits(self.symbols, channel, len(z), generator)
        images = torch.full_like(i_0, FAILURE_VALUE)
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
