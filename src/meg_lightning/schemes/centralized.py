"""Paper benchmark 1 (``centralized``): the ES decodes I_0 and sends its pixels uncoded."""

from __future__ import annotations

from meg_lightning.schemes.base import SCHEMES, BaseScheme, SchemeOutput, send


@SCHEMES.register("centralized")
class CentralizedScheme(BaseScheme):
    """The ES decodes I_0 and sends its pixels, scaled to [-1, 1], uncoded.

    3 H W real symbols per image. The receiver clamps to [0, 1]: a projection onto the valid pixel
    range, which can only lower the error. The UE runs nothing (the pixels are the image).
    """

    order = 0
    hue = "tab:gray"
    paper_role = "pixels"

    def compute(self, parts):
        return 0.0, 0.0, parts.generation + parts.vae_decode

    def __call__(self, z, i_0, *, channel, generator, prompts=None) -> SchemeOutput:
        x = (2 * i_0 - 1).flatten(1)  # (B, 3 H W)
        x_hat = send(channel, x, generator)
        images = ((x_hat.view_as(i_0) + 1) / 2).clamp(0, 1)  # (B, 3, H, W)
        return SchemeOutput(images=images, symbols=x.shape[1])
