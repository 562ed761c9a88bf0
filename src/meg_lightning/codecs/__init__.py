"""Compression codecs C_w / C_psi^{-1} (paper Sec. III-C): the registered architectures
(``codec.arch``: ``paper``, ``mlp``, ``adaptive`` and every other module here that registers one
with :data:`ARCHS`), the Lightning module that trains any of them through any channel
(:mod:`.module`, ``meg train-codec``: :mod:`.train`), the codecs shipped pretrained
(:mod:`.pretrained`) and the latents' second-order theory (:mod:`.klt`: the optimal linear code
and the Gaussian OPTA bound)."""

from meg_lightning.codecs.base import ARCHS, CodecArch, build_codec, code_length, default_hidden
from meg_lightning.codecs.klt import LinearCode, opta_mse
from meg_lightning.codecs.module import CodecModule, load_codec
from meg_lightning.registry import import_members

import_members(__name__, __path__, skip=("base", "klt", "module", "pretrained", "train"))

__all__ = ["ARCHS", "CodecArch", "CodecModule", "LinearCode", "build_codec", "code_length",
           "default_hidden", "load_codec", "opta_mse"]
