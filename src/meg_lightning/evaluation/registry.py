"""The one registry of transmission schemes: a new scheme is one class with ``@register``.

The sweep (cells, builders), the config check of ``eval.schemes``, the figures (order, labels)
and the report all ask this module, never a list of their own. A scheme class declares:

- ``name``: its name in ``eval.schemes`` and in the results;
- ``uses_fc``: its cells repeat for every rate in ``eval.fcs`` (its symbol budget is that of the
  learned codec `meg` at that rate); otherwise one cell per (channel, SNR);
- ``yields_latent``: it delivers a latent estimate z_hat at the UE through
  ``transmit(z, ...)``, so the generative receiver applies: ``<name>+dm`` is then a scheme too
  (:class:`meg_lightning.evaluation.generative.DiffusionReceiver`);
- ``build(ctx, fc, kind)``: the instance for one (fc, channel kind), from a
  :class:`BuildContext` that loads what it needs (codecs, the pipeline, training latents) lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor

#: modules whose classes register themselves (imported on first use of the registry)
SCHEME_MODULES = ("meg_lightning.evaluation.schemes", "meg_lightning.evaluation.digital",
                  "meg_lightning.evaluation.generative")
DM_SUFFIX = "+dm"

SCHEMES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add a scheme class under ``cls.name`` (registration order = plot order)."""
    if cls.name in SCHEMES and SCHEMES[cls.name] is not cls:
        raise ValueError(f"two schemes named {cls.name!r}: {SCHEMES[cls.name]} and {cls}")
    SCHEMES[cls.name] = cls
    return cls


def _load() -> dict[str, type]:
    for m in SCHEME_MODULES:
        importlib.import_module(m)
    return SCHEMES


def base_name(name: str) -> str:
    """``meg+dm`` -> ``meg``; a name without the suffix is returned as is."""
    return name[: -len(DM_SUFFIX)] if name.endswith(DM_SUFFIX) else name


def names() -> list[str]:
    """Every scheme name ``eval.schemes`` accepts, in plot order (``X+dm`` right after ``X``)."""
    out = []
    for n, cls in _load().items():
        out.append(n)
        if cls.yields_latent:
            out.append(n + DM_SUFFIX)
    return out


def scheme_class(name: str) -> type:
    """The class of ``name`` (for ``X+dm``: X's class, whose flags the variant shares)."""
    schemes = _load()
    base = base_name(name)
    if base not in schemes or (name != base and not schemes[base].yields_latent):
        raise KeyError(f"unknown scheme {name!r}: expected one of {', '.join(names())}")
    return schemes[base]


def uses_fc(name: str) -> bool:
    return bool(scheme_class(name).uses_fc)


def yields_latent(name: str) -> bool:
    return bool(scheme_class(name).yields_latent)


def runs_generator(name: str) -> bool:
    """Whether the UE runs the prompt-conditioned generator (``prompt``, every ``X+dm``): the
    scheme needs the test prompts and the pipeline's U-Net."""
    return name.endswith(DM_SUFFIX) or bool(scheme_class(name).runs_generator)


def order(name: str) -> int:
    """Plot / table order of a scheme name (unknown names last)."""
    n = names()
    return n.index(name) if name in n else len(n)


@dataclass
class BuildContext:
    """What scheme builders may need; every loader is called only by a scheme that needs it."""

    cfg: Any  # MegConfig
    decode_image: Callable[[Tensor], Tensor]  # z (B, C, h, w) -> images (B, 3, H, W) in [0, 1]
    latent_shape: tuple[int, ...]
    device: Any
    z_train: Callable[[], Tensor]  # training latents (N, C, h, w)
    codec: Callable[[float], Any]  # fc -> trained codec with encode / decode
    linear_code: Callable[[float], Any]  # fc -> fitted LinearCode
    pipeline: Callable[[], Any]  # the diffusers pipeline (U-Net, text encoder, scheduler)
    train_prompts: Callable[[], list] = list  # the prompts of the training latents
    adaptive_codec: Optional[Callable[[float], Any]] = None  # fc -> SNR-adaptive codec


def build(name: str, ctx: BuildContext, fc: Optional[float], kind: str):
    """The scheme instance of ``name`` for rate ``fc`` (None unless it uses fc) on ``kind``."""
    cls = scheme_class(name)
    scheme = cls.build(ctx, fc, kind)
    if name.endswith(DM_SUFFIX):
        from meg_lightning.evaluation.generative import DiffusionReceiver

        scheme = DiffusionReceiver.wrap(scheme, ctx)
    return scheme
