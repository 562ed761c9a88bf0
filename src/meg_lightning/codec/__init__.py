"""Compression codec C_w / C_psi^{-1} (paper Sec. III-C), its Lightning training module and the
latent-space reference schemes (feature transmission, optimal linear code, Gaussian OPTA)."""

from meg_lightning.codec.baselines import FeatureScheme, LinearCode, opta_mse
from meg_lightning.codec.components import (
    CompressionDecoder,
    CompressionEncoder,
    build_codec,
    code_length,
    default_hidden,
)
from meg_lightning.codec.module import CodecModule, load_codec

__all__ = [
    "CodecModule",
    "CompressionDecoder",
    "CompressionEncoder",
    "FeatureScheme",
    "LinearCode",
    "build_codec",
    "code_length",
    "default_hidden",
    "load_codec",
    "opta_mse",
]
