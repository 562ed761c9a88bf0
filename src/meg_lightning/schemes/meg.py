"""MEG (paper Sec. III): the learned seed x = C_w(z) crosses the channel, the UE decodes
z_hat = C_psi^{-1}(x_hat) and I_g = D(z_hat). ``meg`` evaluates the paper's recipe (one codec per
rate, trained at one SNR), ``meg-adaptive`` the SNR-adaptive, CSI-aware codec (one per rate for
every SNR)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from meg_lightning.metrics.flops import code_length_of, codec_decode_gflops, codec_encode_gflops
from meg_lightning.schemes.base import SCHEMES, LatentTransmission, design_link, send


@SCHEMES.register("meg")
class LatentScheme(LatentTransmission):
    """``meg``: x = C_w(z) (k = round(fc |z|) symbols) -> channel -> z_hat = C_psi^{-1}(x_hat) ->
    I_g = D(z_hat), with ``encode`` / ``decode`` of a trained codec (``CodecModule``): the one
    `meg train-codec` left in ``out_dir/codec/`` (or ``eval.codec_checkpoints[fc]``).

    An adaptive codec (``codec.adaptive``) is told the SNR at both ends and, at the decoder, each
    segment's SNR after zero-forcing (what it was trained with, whatever the cell's
    ``channel.equalizer``), from the same draws as the cell's channel would make."""

    order = 20
    hue = "tab:red"
    uses_fc = True
    analog = True
    learned = "codec"
    paper_role = "proposed"
    summary = "the paper's recipe (one model per rate, trained at one SNR)"

    def __init__(self, decode_image: Callable[[Tensor], Tensor], codec,
                 fc: Optional[float] = None, latent_shape: Optional[tuple] = None):
        self.decode_image, self.codec, self.fc = decode_image, codec, fc
        self.latent_shape = latent_shape

    @classmethod
    def build(cls, ctx, fc):
        return cls(ctx.decode_image, ctx.codec(cls.learned, fc), fc=fc,
                   latent_shape=tuple(ctx.latent_shape))

    def compute(self, parts):
        k = code_length_of(self.codec, self.latent_shape)
        return (0.0, codec_decode_gflops(self.codec, k) + parts.vae_decode,
                parts.generation + codec_encode_gflops(self.codec, self.latent_shape))

    @torch.no_grad()
    def transmit(self, z, *, channel, generator):
        if getattr(self.codec, "adaptive", False):
            return self._transmit_adaptive(z, channel, generator)
        x = self.codec.encode(z).flatten(1)  # (B, k)
        x_hat = send(channel, x, generator)
        return self.codec.decode(x_hat).reshape(z.shape), x.shape[1]  # (B, C, h, w)

    def _transmit_adaptive(self, z, channel, generator):
        link, snr = design_link(channel)
        snr_t = torch.full((z.shape[0],), snr, device=z.device, dtype=torch.float32)
        x = self.codec.encode(z, snr_t).flatten(1)  # (B, k)
        out = link(x, mode="eval", snr_db=snr_t, generator=generator)
        z_hat = self.codec.decode(out["x_hat"], snr_t, out["csi_db"])
        return z_hat.reshape(z.shape), x.shape[1]


@SCHEMES.register("meg-adaptive")
class AdaptiveLatentScheme(LatentScheme):
    """``meg-adaptive``: MEG with the SNR-adaptive, CSI-aware codec (``codec.arch=adaptive``,
    :mod:`meg_lightning.codecs.adaptive`): one model per rate serves every SNR; both ends know the
    SNR, the decoder also each segment's SNR after equalisation. Its codec is
    ``eval.adaptive_checkpoints[fc]``, else `make train-codec-adaptive`'s in ``out_dir``, else the
    one shipped for the model (:mod:`meg_lightning.codecs.pretrained`; ``eval.pretrained=true``
    always takes that one)."""

    order = 30
    hue = "tab:orange"
    learned = "codec-adaptive"
    paper_role = None
    snr_adaptive = True
    summary = ("one SNR-adaptive, CSI-aware model per rate for every SNR (docs/CODECS.md)")
