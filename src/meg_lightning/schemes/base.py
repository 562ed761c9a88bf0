"""What every transmission scheme shares: the registry, the call, the output and the build context.

A scheme is one class registered with :data:`SCHEMES` in its own file of this package, its
transmit (ES) and receive (UE) halves together. It maps a batch of ES-side latents z (B, C, h, w)
and the perfect images I_0 = D(z) (B, 3, H, W) to the UE's images I_g through one channel
realisation::

    scheme(z, i_0, *, channel, generator, prompts=None) -> SchemeOutput(images, symbols, z_hat, info)

``channel`` is the cell's link (:class:`meg_lightning.channels.Channel`, built with the cell's
SNR: the one route by which the SNR reaches a scheme; :func:`link_snr`). A scheme that delivers a
latent estimate (``yields_latent``) implements ``transmit(z, *, channel, generator) -> (z_hat,
symbols)``; for those the generative receiver ``X+dm`` exists too (:mod:`.generative`).

What figures, the report and the sweep need to know of a scheme are its class properties (see
:class:`BaseScheme`): no consumer spells a scheme's name.

Conventions (DESIGN.md): symbols are real, a complex channel use carries two; the channel layer
normalises each sample to unit mean power, adds noise of variance 10^(-SNR/10) per real symbol and
de-normalises. ``symbols`` in :class:`SchemeOutput` is the number of real symbols per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Protocol, Sequence

import torch
from torch import Tensor

from meg_lightning.errors import ConfigError
from meg_lightning.metrics.flops import ComputeParts
from meg_lightning.registry import Registry

#: every transmission scheme, by ``eval.schemes`` name (``X+dm`` variants are derived, see names())
SCHEMES: Registry = Registry("scheme", "eval.schemes")
#: suffix of a generative-receiver variant (``meg+dm``): the UE denoises X's latent estimate
DM_SUFFIX = "+dm"

#: Image the UE shows when an all-or-nothing scheme's bits do not arrive (an outage): mid-grey,
#: the constant image closest in MSE to an unknown image in [0, 1] whose pixels are symmetric
#: about 0.5.
FAILURE_VALUE = 0.5

#: SNR the codes that design their receiver for the noise (the linear code, the adaptive codec)
#: are designed for on the noiseless channel: at 200 dB the linear receiver inverts its loading.
NOISELESS_DESIGN_SNR_DB = 200.0


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

    def __call__(self, z: Tensor, i_0: Tensor, *, channel, generator: Optional[torch.Generator],
                 prompts: Optional[Sequence[str]] = None) -> SchemeOutput: ...


def link_snr(channel) -> Optional[float]:
    """The SNR (dB) of the cell's link, None on the noiseless channel."""
    return None if channel.noiseless else float(channel.snr_db)


def design_link(channel, normalize: bool = True):
    """(a zero-forcing copy of the cell's channel, the SNR a code designs its receiver for): the
    link of the codes that use the channel state (the linear code, the adaptive codec), whatever
    the cell's ``channel.equalizer``; the noiseless channel is designed for at
    :data:`NOISELESS_DESIGN_SNR_DB` (a finite noise variance)."""
    snr = link_snr(channel)
    snr = NOISELESS_DESIGN_SNR_DB if snr is None else snr
    return channel.replace(snr_db=snr, equalizer="zf", normalize=normalize), snr


class BaseScheme:
    """A registered scheme's properties (read by the sweep, the figures and the report) and
    defaults. Set on each class:

    - ``order``: presentation order (plots, tables);
    - ``hue``: its colour in every figure (a matplotlib colour);
    - ``uses_fc``: its cells repeat for every rate in ``eval.fcs`` (its symbol budget is that of
      the learned codec at that rate); otherwise one cell per (channel, SNR);
    - ``yields_latent``: it delivers a latent estimate through ``transmit``, so ``X+dm`` exists;
    - ``runs_generator``: the UE runs the prompt-conditioned generator (needs prompts, pipeline);
    - ``analog``: an analog code of the latent (its rows carry the OPTA bound);
    - ``digital``: bits over a channel code, all or nothing per codeword;
    - ``channel_code``: ``ldpc`` (a real code with an MCS per SNR) | ``ideal`` (capacity) | None;
    - ``learned``: the out_dir folder of the trained codec it evaluates (``codec``,
      ``codec-adaptive``), None for none;
    - ``paper_role``: its part in the paper's comparison: ``pixels`` (benchmark 1, the image
      sent uncoded), ``latent`` (benchmark 2, the latent sent uncoded), ``proposed`` (MEG);
    - ``regenerates``: the UE regenerates the image from the prompt (no latent is sent);
    - ``snr_adaptive``: one learned codec per rate serves every SNR (its rows lead the codec
      comparison of the report);
    - ``reference_code``: the optimal linear code a learned codec must beat;
    - ``summary``: one phrase that says what it sends and how (reports).
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    hue: ClassVar[str] = "tab:gray"
    uses_fc: ClassVar[bool] = False
    yields_latent: ClassVar[bool] = False
    runs_generator: ClassVar[bool] = False
    analog: ClassVar[bool] = False
    digital: ClassVar[bool] = False
    channel_code: ClassVar[Optional[str]] = None
    learned: ClassVar[Optional[str]] = None
    paper_role: ClassVar[Optional[str]] = None
    regenerates: ClassVar[bool] = False
    snr_adaptive: ClassVar[bool] = False
    reference_code: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    fc: Optional[float] = None

    @classmethod
    def build(cls, ctx: "BuildContext", fc: Optional[float]) -> "BaseScheme":
        return cls()

    def compute(self, parts: ComputeParts) -> tuple[float, float, float]:
        """(U-Net evaluations at the UE, UE GFLOPs, ES GFLOPs) per image, from the generator's
        component costs ``parts`` and this scheme's own coders."""
        raise NotImplementedError


class LatentTransmission(BaseScheme):
    """A scheme that delivers a latent estimate: ``transmit`` gives (z_hat, real symbols per
    image), the UE decodes I_g = D(z_hat). Generative receivers wrap ``transmit``."""

    yields_latent = True
    decode_image: Callable[[Tensor], Tensor]

    def transmit(self, z: Tensor, *, channel, generator: Optional[torch.Generator]
                 ) -> tuple[Tensor, int]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, z, i_0, *, channel, generator, prompts=None) -> SchemeOutput:
        z_hat, symbols = self.transmit(z, channel=channel, generator=generator)
        return SchemeOutput(images=self.decode_image(z_hat), symbols=symbols, z_hat=z_hat)


def send(channel, x: Tensor, generator) -> Tensor:
    """x (B, n) through the channel layer in eval mode; returns the de-normalised x_hat (B, n)."""
    return channel(x, mode="eval", generator=generator)["x_hat"]


# -- the registry's view: names, properties, instances -----------------------------------------


def base_name(name: str) -> str:
    """``meg+dm`` -> ``meg``; a name without the suffix is returned as is."""
    return name[: -len(DM_SUFFIX)] if name.endswith(DM_SUFFIX) else name


def names() -> list[str]:
    """Every scheme name ``eval.schemes`` accepts, in presentation order (``X+dm`` after X)."""
    out = []
    for n, cls in SCHEMES.items():
        out.append(n)
        if cls.yields_latent:
            out.append(n + DM_SUFFIX)
    return out


def scheme_class(name: str) -> type:
    """The class of ``name`` (for ``X+dm``: X's class, whose properties the variant shares); a
    one-line ConfigError naming ``eval.schemes`` for an unknown name."""
    base = base_name(name)
    if base not in SCHEMES or (name != base and not SCHEMES[base].yields_latent):
        raise ConfigError("eval.schemes", name, f"one of {', '.join(names())}")
    return SCHEMES[base]


def is_dm(name: str) -> bool:
    """Whether ``name`` is a generative-receiver variant ``X+dm``."""
    return name.endswith(DM_SUFFIX)


def runs_generator(name: str) -> bool:
    """Whether the UE runs the prompt-conditioned generator (``prompt``, every ``X+dm``): the
    scheme needs the test prompts and the pipeline's U-Net."""
    return is_dm(name) or bool(scheme_class(name).runs_generator)


def order(name: str) -> int:
    """Presentation order of a scheme name (unknown names last)."""
    n = names()
    return n.index(name) if name in n else len(n)


def with_role(role: str) -> list[str]:
    """The registered schemes that play ``role`` in the paper's comparison (``paper_role``)."""
    return [n for n, cls in SCHEMES.items() if cls.paper_role == role]


def having(**props: Any) -> list[str]:
    """The registered schemes (in presentation order) whose class properties equal ``props``,
    e.g. ``having(analog=True, uses_fc=True)``."""
    return [n for n, cls in SCHEMES.items()
            if all(getattr(cls, k) == v for k, v in props.items())]


@dataclass
class BuildContext:
    """What scheme builders may need; every loader is called only by a scheme that needs it."""

    cfg: Any  # MegConfig
    decode_image: Callable[[Tensor], Tensor]  # z (B, C, h, w) -> images (B, 3, H, W) in [0, 1]
    latent_shape: tuple[int, ...]
    device: Any
    z_train: Callable[[], Tensor]  # training latents (N, C, h, w)
    codec: Callable[[str, float], Any]  # (learned folder, fc) -> trained codec (encode / decode)
    linear_code: Callable[[float], Any]  # fc -> fitted LinearCode
    pipeline: Callable[[], Any]  # the diffusers pipeline (U-Net, text encoder, scheduler)
    train_prompts: Callable[[], list] = list  # the prompts of the training latents

    @property
    def numel(self) -> int:
        return math.prod(self.latent_shape)
