"""Transmission schemes compared at the same SNR, each counted in real channel symbols (Table II).

Every scheme maps a batch of ES-side latents z (B, C, h, w) and the perfect images I_0 = D(z)
(B, 3, H, W) to the UE's images I_g, through one channel realisation::

    centralized  I_0 -> pixels in [-1, 1] --------------------- channel --> clamp -> I_g
    feature      z -----------------------------flatten ------- channel --> D -> I_g
    meg          z -> C_w (k = round(fc |z|) symbols) --------- channel --> C_psi^-1 -> D -> I_g
    linear       z -> KLT + power loading (k symbols) --------- channel --> LMMSE -> D -> I_g
    digital-image I_0 -> PNG/JPEG bytes -> ideal code at capacity, k symbols -> bytes or failure

More schemes register themselves elsewhere (:mod:`meg_lightning.evaluation.registry`): the
generative receivers ``X+dm`` and ``prompt`` (evaluation.generative) and the latent digital
scheme with a real channel code (evaluation.digital).

Conventions (DESIGN.md): symbols are real, a complex channel use carries two; the channel layer
normalises each sample to unit mean power, adds noise of variance 10^(-SNR/10) per real symbol and
de-normalises. ``symbols`` in :class:`SchemeOutput` is the number of real symbols per image.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from meg_lightning.channel.ldpc import block_sizes  # noqa: F401 - re-exported
from meg_lightning.evaluation.registry import register

#: Image the UE shows when the digital scheme's bits do not fit (an outage): mid-grey, the
#: constant image closest in MSE to an unknown image in [0, 1] whose pixels are symmetric about 0.5.
DIGITAL_FAILURE_VALUE = 0.5
JPEG_QUALITY = 75  # PIL's default quality for the `jpeg` source code of the digital scheme


@dataclass
class SchemeOutput:
    """What the UE ends up with for one batch."""

    images: Tensor  # I_g (B, 3, H, W) in [0, 1]
    symbols: int  # real channel symbols sent per image
    z_hat: Optional[Tensor] = None  # (B, C, h, w) latent at the UE; None for image-domain schemes
    info: dict[str, Tensor] = field(default_factory=dict)  # per-image extras, each (B,)


class Scheme(Protocol):
    name: str
    fc: Optional[float]

    def __call__(self, z: Tensor, i_0: Tensor, *, channel, snr_db: Optional[float],
                 generator: Optional[torch.Generator],
                 prompts: Optional[Sequence[str]] = None) -> SchemeOutput: ...


class BaseScheme:
    """Defaults of a registered scheme (see :mod:`meg_lightning.evaluation.registry`)."""

    name: ClassVar[str]
    uses_fc: ClassVar[bool] = False  # cells for every eval.fcs, with the budget of meg at fc
    yields_latent: ClassVar[bool] = False  # has transmit(): z -> z_hat, so X+dm exists
    # the UE runs the prompt-conditioned generator: the scheme needs the prompts and the pipeline
    # (every X+dm does too: registry.runs_generator)
    runs_generator: ClassVar[bool] = False
    fc: Optional[float] = None

    @classmethod
    def build(cls, ctx, fc: Optional[float], kind: str) -> "BaseScheme":
        return cls()

    @classmethod
    def compute(cls, parts, fc: Optional[float]) -> tuple[float, float, float]:
        """(U-Net evaluations at the UE, UE GFLOPs, ES GFLOPs) per image, from the component
        costs ``parts`` (:class:`meg_lightning.evaluation.compute.ComputeParts`)."""
        raise NotImplementedError


class LatentTransmission(BaseScheme):
    """A scheme that delivers a latent estimate: ``transmit`` gives (z_hat, real symbols per
    image), the UE decodes I_g = D(z_hat). Generative receivers wrap ``transmit``."""

    yields_latent = True
    decode_image: Callable[[Tensor], Tensor]

    def transmit(self, z: Tensor, *, channel, snr_db: Optional[float],
                 generator: Optional[torch.Generator]) -> tuple[Tensor, int]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel, snr_db, generator, prompts=None) -> SchemeOutput:
        z_hat, symbols = self.transmit(z, channel=channel, snr_db=snr_db, generator=generator)
        return SchemeOutput(images=self.decode_image(z_hat), symbols=symbols, z_hat=z_hat)


#: SNR the linear code is designed for on the noiseless channel: its power loading and LMMSE
#: receiver need a finite noise variance; at 200 dB the receiver inverts the loading exactly.
NOISELESS_DESIGN_SNR_DB = 200.0


def _zf_link(channel, snr_db: Optional[float], normalize: bool = True):
    """(a zero-forcing channel of the cell's kind and number of blocks, its SNR): what the codes
    that use the channel state (the linear code, the adaptive codec) are sent over, whatever the
    cell's ``channel.equalizer``. The noiseless channel is designed for at
    NOISELESS_DESIGN_SNR_DB (the codes need a finite noise variance)."""
    from meg_lightning.channel import Channel

    kind = getattr(channel, "kind", "awgn")
    snr = NOISELESS_DESIGN_SNR_DB if kind == "none" or snr_db is None else float(snr_db)
    return Channel(kind=kind, snr_db=snr, equalizer="zf", normalize=normalize,
                   num_blocks=getattr(channel, "num_blocks", 1)), snr


def _send(channel, x: Tensor, snr_db: Optional[float], generator) -> Tensor:
    """x (B, n) through the channel layer in eval mode; returns the de-normalised x_hat (B, n)."""
    return channel(x, mode="eval", snr_db=snr_db, generator=generator)["x_hat"]


@register
class CentralizedScheme(BaseScheme):
    """Paper benchmark 1: the ES decodes I_0 and sends its pixels, scaled to [-1, 1], uncoded.

    3 H W real symbols per image. The receiver clamps to [0, 1]: a projection onto the valid pixel
    range, which can only lower the error.
    """

    name = "centralized"

    @classmethod
    def compute(cls, parts, fc):
        return 0.0, 0.0, parts.generation + parts.vae_decode  # the pixels are the image

    def __call__(self, z, i_0, *, channel, snr_db, generator, prompts=None) -> SchemeOutput:
        x = (2 * i_0 - 1).flatten(1)  # (B, 3 H W)
        x_hat = _send(channel, x, snr_db, generator)
        images = ((x_hat.view_as(i_0) + 1) / 2).clamp(0, 1)  # (B, 3, H, W)
        return SchemeOutput(images=images, symbols=x.shape[1])


@register
class FeatureLatentScheme(LatentTransmission):
    """Paper benchmark 2: the raw latent z, |z| real symbols, through the cell's channel
    (:class:`meg_lightning.codec.FeatureScheme`, the same code path as codec training)."""

    name = "feature"

    @classmethod
    def compute(cls, parts, fc):
        return 0.0, parts.vae_decode, parts.generation

    def __init__(self, decode_image: Callable[[Tensor], Tensor]):
        self.decode_image = decode_image

    @classmethod
    def build(cls, ctx, fc, kind):
        return cls(ctx.decode_image)

    @torch.no_grad()
    def transmit(self, z, *, channel, snr_db, generator):
        from meg_lightning.codec import FeatureScheme

        z_hat = FeatureScheme(channel)(z, snr_db=snr_db, generator=generator)["z_hat"]
        return z_hat, z[0].numel()


@register
class LatentScheme(LatentTransmission):
    """``meg``: x = C_w(z) (k = round(fc |z|) symbols) -> channel -> z_hat = C_psi^-1(x_hat) ->
    I_g = D(z_hat), with ``encode`` / ``decode`` of a trained codec (``CodecModule``)."""

    name = "meg"
    uses_fc = True

    @classmethod
    def compute(cls, parts, fc):
        return (0.0, parts.at("codec_decode", fc) + parts.vae_decode,
                parts.generation + parts.at("codec_encode", fc))

    def __init__(self, name: str, decode_image: Callable[[Tensor], Tensor],
                 encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                 fc: Optional[float] = None, codec=None):
        self.name, self.fc = name, fc
        self.decode_image = decode_image
        self.encode, self.decode = encode, decode
        self.codec = codec  # the module (for the compute count), when known

    @classmethod
    def build(cls, ctx, fc, kind):
        codec = ctx.codec(fc)
        return cls("meg", ctx.decode_image, encode=codec.encode, decode=codec.decode, fc=fc,
                   codec=codec)

    @torch.no_grad()
    def transmit(self, z, *, channel, snr_db, generator):
        if getattr(self.codec, "adaptive", False):
            return self._transmit_adaptive(z, channel, snr_db, generator)
        x = self.encode(z).flatten(1)  # (B, k)
        x_hat = _send(channel, x, snr_db, generator)
        return self.decode(x_hat).reshape(z.shape), x.shape[1]  # (B, C, h, w)

    def _transmit_adaptive(self, z, channel, snr_db, generator):
        """An SNR-adaptive codec: both ends know the cell's SNR, and the decoder each fading
        block's SNR after zero-forcing (what it was trained with, whatever the cell's
        ``channel.equalizer``), from the same draws as the cell's channel would make."""
        from meg_lightning.codec.module import effective_snr_db

        link, snr = _zf_link(channel, snr_db)
        snr_t = torch.full((z.shape[0],), snr, device=z.device, dtype=torch.float32)
        x = self.codec.encode(z, snr_t).flatten(1)  # (B, k)
        out = link(x, mode="eval", snr_db=snr_t, generator=generator)
        z_hat = self.codec.decode(out["x_hat"], snr_t, effective_snr_db(out))
        return z_hat.reshape(z.shape), x.shape[1]


@register
class AdaptiveLatentScheme(LatentScheme):
    """``meg-adaptive``: MEG with the SNR-adaptive, CSI-aware codec (``codec.arch=adaptive``,
    :mod:`meg_lightning.codec.adaptive`): one model per rate serves every SNR; both ends know the
    SNR, the decoder also each fading block's SNR after equalisation. Its codec is
    ``eval.adaptive_checkpoints[fc]``, else `make train-codec-adaptive`'s in ``out_dir``, else the
    one shipped for the model (:mod:`meg_lightning.codec.pretrained`; ``eval.pretrained=true``
    always takes that one)."""

    name = "meg-adaptive"

    @classmethod
    def compute(cls, parts, fc):
        return (0.0, parts.at("adaptive_decode", fc) + parts.vae_decode,
                parts.generation + parts.at("adaptive_encode", fc))

    @classmethod
    def build(cls, ctx, fc, kind):
        codec = ctx.adaptive_codec(fc)
        return cls("meg-adaptive", ctx.decode_image, encode=codec.encode, decode=codec.decode,
                   fc=fc, codec=codec)


@register
class LinearScheme(LatentTransmission):
    """``linear``: the optimal linear analog code (:class:`meg_lightning.codec.LinearCode`: KLT to
    k = round(fc |z|) components, MMSE power loading, LMMSE receiver), fitted on training latents.

    The code meets the average power constraint itself, so by default (``eval.linear_power=
    average``) it is sent over a channel of the cell's kind and number of blocks *without*
    per-sample normalisation; ``seed`` normalises each seed to unit power as every other scheme's
    channel does (on test latents with more variance than the training ones the average-power
    code spends more than the budget: 6-13% on mini's held-out captions, docs/CODECS.md). Always
    with zero-forcing (its LMMSE receiver follows the ZF equaliser, and uses the de-normalised
    noise variance), whatever ``channel.equalizer`` says.
    """

    name = "linear"
    uses_fc = True

    @classmethod
    def compute(cls, parts, fc):
        return (0.0, parts.at("linear_decode", fc) + parts.vae_decode,
                parts.generation + parts.at("linear_encode", fc))

    def __init__(self, code, decode_image: Callable[[Tensor], Tensor], fc: Optional[float] = None,
                 power: str = "average"):
        if power not in ("average", "seed"):
            raise ValueError(f"power must be average or seed, got {power!r}")
        self.code, self.decode_image, self.fc, self.power = code, decode_image, fc, power

    @classmethod
    def build(cls, ctx, fc, kind):
        return cls(ctx.linear_code(fc), ctx.decode_image, fc=fc, power=ctx.cfg.eval.linear_power)

    @torch.no_grad()
    def transmit(self, z, *, channel, snr_db, generator):
        # average: the closed form's constraint (on test latents with more variance than the
        # training ones it spends more than the budget); seed: every seed at unit power
        self.code.channel, snr = _zf_link(channel, snr_db, normalize=self.power == "seed")
        z_hat = self.code(z, snr_db=snr, generator=generator)["z_hat"].reshape(z.shape)
        return z_hat, self.code.k


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_image(img: np.ndarray, codec: str) -> bytes:
    """Source code of the digital scheme: one (H, W, 3) uint8 image as PNG or JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if codec == "png":
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
    elif codec == "jpeg":
        Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"digital codec must be png or jpeg, got {codec!r}")
    return buf.getvalue()


def decode_image_bytes(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def awgn_capacity_bits(symbols: int, snr_db: float) -> float:
    """Bits an ideal code carries in ``symbols`` real symbols: symbols * 0.5 log2(1 + SNR)."""
    return symbols * 0.5 * math.log2(1 + 10 ** (snr_db / 10))


def threshold_snr_db(bits: float, symbols: int) -> float:
    """The AWGN SNR (dB) at which ``bits`` just fit in ``symbols`` real symbols (inverse of above)."""
    r = 2 * bits / symbols  # needed log2(1 + SNR)
    if r > 60:  # 2^r - 1 ~ 2^r: avoid overflow
        return 10 * r * math.log10(2)
    return 10 * math.log10(2 ** r - 1) if r > 0 else -math.inf


def capacity_bits(symbols: int, kind: str, num_blocks: int, snr_db: Optional[float], batch: int,
                  generator: Optional[torch.Generator]) -> Tensor:
    """Bits an ideal capacity-achieving code carries in ``symbols`` real symbols, for each of
    ``batch`` transmissions, (batch,) float64.

    AWGN: symbols x 0.5 log2(1 + SNR). Rayleigh block fading with CSI at the receiver: the code
    spans the B blocks and carries sum_b n_b 0.5 log2(1 + |h_b|^2 SNR) for the realised gains
    |h_b|^2 ~ Exp(1) (drawn from ``generator``). ``none`` (noiseless): infinite.
    """
    if kind not in ("awgn", "rayleigh", "none"):
        raise ValueError(f"channel kind must be awgn, rayleigh or none, got {kind!r}")
    if kind == "none" or snr_db is None:
        return torch.full((batch,), math.inf, dtype=torch.float64)
    snr = 10 ** (snr_db / 10)
    if kind == "awgn":
        return torch.full((batch,), awgn_capacity_bits(symbols, snr_db), dtype=torch.float64)
    n_b = torch.tensor(block_sizes(symbols, num_blocks), dtype=torch.float64)
    # |h_b|^2 of h_b ~ CN(0, 1) is Exp(1); drawn where the cell's generator lives
    device = generator.device if generator is not None else torch.device("cpu")
    gains = torch.empty(batch, num_blocks, dtype=torch.float64, device=device)
    gains = gains.exponential_(1.0, generator=generator).cpu()  # (batch, B)
    return (n_b * 0.5 * torch.log2(1 + gains * snr)).sum(1)


@register
class DigitalScheme(BaseScheme):
    """``digital-image``: PNG/JPEG bytes of I_0 over an ideal capacity-achieving code.

    The budget is ``symbols`` real symbols (that of the ``meg`` scheme at the same fc), carried
    as :func:`capacity_bits` says. All or nothing: if the image's bits fit, the UE gets the
    decoded image (I_0 quantised to 8 bits, or its JPEG); else an outage, and the UE shows a
    mid-grey image (:data:`DIGITAL_FAILURE_VALUE`). On mini the bytes never fit the seed's budget;
    the latent digital scheme with a real channel code is ``digital`` (evaluation.digital).
    """

    name = "digital-image"
    uses_fc = True

    @classmethod
    def compute(cls, parts, fc):
        # PNG encode / decode are integer work (0 GFLOPs); the ideal code's decoder is costed
        # like the LDPC decoder of the same budget
        return 0.0, parts.at("digital_decode", fc), parts.generation + parts.vae_decode

    def __init__(self, symbols: int, codec: str = "png", kind: str = "awgn", num_blocks: int = 1,
                 fc: Optional[float] = None):
        if kind not in ("awgn", "rayleigh", "none"):
            raise ValueError(f"channel kind must be awgn, rayleigh or none, got {kind!r}")
        self.symbols, self.codec, self.kind, self.num_blocks, self.fc = (int(symbols), codec, kind,
                                                                         num_blocks, fc)

    @classmethod
    def build(cls, ctx, fc, kind):
        from meg_lightning.codec.components import code_length

        return cls(code_length(fc, math.prod(ctx.latent_shape)), codec=ctx.cfg.eval.digital_codec,
                   kind=kind, num_blocks=ctx.cfg.channel.num_blocks, fc=fc)

    def capacity_bits(self, snr_db: Optional[float], batch: int,
                      generator: Optional[torch.Generator]) -> Tensor:
        """Bits each of ``batch`` transmissions can carry at ``snr_db``, (batch,) float64."""
        return capacity_bits(self.symbols, self.kind, self.num_blocks, snr_db, batch, generator)

    def __call__(self, z, i_0, *, channel=None, snr_db, generator, prompts=None) -> SchemeOutput:
        imgs = to_uint8(i_0)  # (B, H, W, 3)
        payloads = [encode_image(im, self.codec) for im in imgs]
        bits = torch.tensor([8.0 * len(p) for p in payloads], dtype=torch.float64)
        ok = bits <= self.capacity_bits(snr_db, len(imgs), generator)
        out = torch.full_like(i_0, DIGITAL_FAILURE_VALUE)
        for i in torch.nonzero(ok).flatten().tolist():
            dec = torch.from_numpy(decode_image_bytes(payloads[i]).copy())  # (H, W, 3)
            out[i] = dec.permute(2, 0, 1).to(i_0) / 255
        thr = torch.tensor([threshold_snr_db(b, self.symbols) for b in bits.tolist()],
                           dtype=torch.float64)
        return SchemeOutput(images=out, symbols=self.symbols,
                            info={"success": ok.double(), "payload_bits": bits,
                                  "threshold_snr_db": thr})
