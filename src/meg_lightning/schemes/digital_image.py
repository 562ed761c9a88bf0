"""``digital-image``: the PNG/JPEG bytes of I_0 over an ideal capacity-achieving code."""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from meg_lightning.codecs.base import code_length
from meg_lightning.metrics.flops import ldpc_decode_gflops
from meg_lightning.schemes.base import FAILURE_VALUE, SCHEMES, BaseScheme, SchemeOutput
from meg_lightning.schemes.ideal import capacity_bits, threshold_snr_db

JPEG_QUALITY = 75  # PIL's default quality for the `jpeg` source code
IMAGE_CODECS = ("png", "jpeg")


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_image(img: np.ndarray, codec: str) -> bytes:
    """One (H, W, 3) uint8 image as PNG or JPEG bytes."""
    buf = io.BytesIO()
    if codec == "png":
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
    elif codec == "jpeg":
        Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"digital codec must be png or jpeg, got {codec!r}")
    return buf.getvalue()


def decode_image_bytes(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@SCHEMES.register("digital-image")
class DigitalImageScheme(BaseScheme):
    """PNG/JPEG bytes of I_0 (``eval.digital_codec``) over an ideal capacity-achieving code.

    The budget is ``symbols`` real symbols (that of the learned codec at the same fc), carried as
    :func:`~meg_lightning.schemes.ideal.capacity_bits` says. All or nothing: if the image's bits
    fit, the UE gets the decoded image (I_0 quantised to 8 bits, or its JPEG); else an outage, and
    the UE shows a mid-grey image (:data:`~meg_lightning.schemes.base.FAILURE_VALUE`). The ideal
    code's decoder is costed like the LDPC decoder of the same budget; PNG is integer work.
    """

    order = 70
    hue = "tab:brown"
    uses_fc = True
    digital = True
    channel_code = "ideal"

    def __init__(self, symbols: int, codec: str = "png", fc: Optional[float] = None):
        if codec not in IMAGE_CODECS:
            raise ValueError(f"digital codec must be png or jpeg, got {codec!r}")
        self.symbols, self.codec, self.fc = int(symbols), codec, fc

    @classmethod
    def build(cls, ctx, fc):
        return cls(code_length(fc, ctx.numel), codec=ctx.cfg.eval.digital_codec, fc=fc)

    def compute(self, parts):
        return 0.0, ldpc_decode_gflops(self.symbols), parts.generation + parts.vae_decode

    def __call__(self, z, i_0, *, channel, generator, prompts=None) -> SchemeOutput:
        imgs = to_uint8(i_0)  # (B, H, W, 3)
        payloads = [encode_image(im, self.codec) for im in imgs]
        bits = torch.tensor([8.0 * len(p) for p in payloads], dtype=torch.float64)
        ok = bits <= capacity_bits(self.symbols, channel, len(imgs), generator)
        out = torch.full_like(i_0, FAILURE_VALUE)
        for i in torch.nonzero(ok).flatten().tolist():
            dec = torch.from_numpy(decode_image_bytes(payloads[i]).copy())  # (H, W, 3)
            out[i] = dec.permute(2, 0, 1).to(i_0) / 255
        thr = torch.tensor([threshold_snr_db(b, self.symbols) for b in bits.tolist()],
                           dtype=torch.float64)
        return SchemeOutput(images=out, symbols=self.symbols,
                            info={"success": ok.double(), "payload_bits": bits,
                                  "threshold_snr_db": thr})
