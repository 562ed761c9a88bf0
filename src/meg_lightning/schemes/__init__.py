"""Transmission schemes, each one class registered by name in its own file (``eval.schemes``):
``centralized``, ``feature``, ``meg``, ``meg-adaptive``, ``linear``, ``digital`` (5G LDPC),
``capacity``, ``digital-image``, ``prompt``, and ``X+dm`` (the generative receiver) for every
scheme X that delivers a latent. Each scheme keeps its transmit and receive halves together, with
the codes it uses beside it (the LDPC link, the quantiser, the ideal code)."""

from typing import Optional

from meg_lightning.registry import import_members
from meg_lightning.schemes.base import (
    DM_SUFFIX,
    SCHEMES,
    BaseScheme,
    BuildContext,
    LatentTransmission,
    Scheme,
    SchemeOutput,
    base_name,
    having,
    is_dm,
    link_snr,
    names,
    order,
    runs_generator,
    scheme_class,
    with_role,
)
from meg_lightning.schemes.generative import DiffusionReceiver

import_members(__name__, __path__, skip=("base", "generative"))


def build(name: str, ctx: BuildContext, fc: Optional[float]):
    """The scheme instance of ``name`` for rate ``fc`` (None unless it uses fc); ``X+dm`` is X's
    instance wrapped in the generative receiver."""
    scheme = scheme_class(name).build(ctx, fc)
    return DiffusionReceiver.wrap(scheme, ctx) if is_dm(name) else scheme


__all__ = ["DM_SUFFIX", "SCHEMES", "BaseScheme", "BuildContext", "DiffusionReceiver",
           "LatentTransmission", "Scheme", "SchemeOutput", "base_name", "build", "having", "is_dm", "link_snr",
           "names", "order", "runs_generator", "scheme_class", "with_role"]
