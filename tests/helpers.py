"""Small builders the tests share (not fixtures)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from meg_lightning.codecs import ARCHS, CodecModule
from meg_lightning.registry import settings_of


def codec_module(latent_shape: Sequence[int], channel: Optional[dict] = None, seed: int = 0,
                 data_id: Optional[str] = None, **settings: Any) -> CodecModule:
    """``CodecModule`` from flat keywords: the architecture's own settings (``width=16``) go to
    ``codec.<arch>``, the rest (``fc``, ``arch``, ``loss``, ...) to the ``codec`` section."""
    arch = settings.get("arch", "paper")
    own = {f.name for f in dataclasses.fields(settings_of(ARCHS[arch]))}
    codec = {k: v for k, v in settings.items() if k not in own}
    codec[arch] = {k: v for k, v in settings.items() if k in own}
    return CodecModule(latent_shape, codec=codec, channel=channel, seed=seed, data_id=data_id)
