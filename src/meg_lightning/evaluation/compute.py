"""The UE-compute axis: how much computation the UE (and the ES) runs per image, per scheme.

The paper's premise is a UE too weak to run the U-Net, so every scheme is also judged by the work
it leaves to the UE. Three columns are added to every results row (:func:`compute_columns`):

- ``ue_unet_evals``: U-Net evaluations the UE runs per image (batch-1 evaluations; with
  classifier-free guidance > 1 one DDIM step is two of them, conditional and unconditional).
  0 for every scheme but ``prompt`` (``es_steps`` steps) and ``X+dm`` (its steps actually run,
  averaged over the cell's images).
- ``ue_gflops``: GFLOPs (1e9 floating-point operations) the UE runs per image: the decoders it
  runs (codec decoder, linear LMMSE decoder, LDPC decoder, VAE decoder D) plus, for ``prompt`` and
  ``+dm``, the text encoder and the U-Net evaluations above.
- ``es_gflops``: GFLOPs the edge server runs per image: generation (text encoder + ``es_steps``
  U-Net steps) and its encoder (codec encoder, KLT, or the VAE decoder that makes I_0's pixels).

Per scheme (``e`` = 2 U-Net evaluations per DDIM step with guidance > 1, else 1; ``gen`` =
text_encoder + es_steps * e * unet_eval)::

    scheme         UE                                             ES
    centralized    0 (the pixels are the image)                   gen + vae_decode
    feature        vae_decode                                     gen
    meg            codec_decode[fc] + vae_decode                  gen + codec_encode[fc]
    linear         linear_decode[fc] + vae_decode                 gen + linear_encode[fc]
    digital        digital_decode[fc] + vae_decode                gen  (quantiser, LDPC encoder ~0)
    digital-image  digital_decode[fc] + PNG decode (~0)           gen + vae_decode  (PNG encode ~0)
    prompt         text_encoder + es_steps * e * unet_eval        0  (the text is sent as it is)
                     + vae_decode
    X+dm           UE(X) + text_encoder + n * e * unet_eval       ES(X)
                   (X in feature, meg, linear, digital; n = ue_steps_run, the DDIM steps the
                   receiver actually ran per image; the text encoder only when n > 0)

How FLOPs are counted (1 multiply-add = 2 FLOPs; element-wise work is not counted; the LDPC
decoder approximately) is in :mod:`meg_lightning.metrics.flops`, which measures each component.
The generator's components are measured once per sweep (:class:`ComputeParts`); each scheme
adds its own coders (its ``compute``), each measured once per module and shape.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from meg_lightning.config import MegConfig
from meg_lightning.evaluation.cells import Cell
from meg_lightning.generation.sd15 import MAX_LENGTH, build_components
from meg_lightning.metrics.flops import ComputeParts
from meg_lightning.schemes import BuildContext, is_dm, runs_generator

#: the columns every results row gets (:func:`cell_compute_columns`)
COMPUTE_COLUMNS = ("ue_unet_evals", "ue_gflops", "es_gflops")


@dataclass(frozen=True)
class Compute:
    """One scheme's computation per image: the three results columns (module docstring)."""

    ue_unet_evals: float
    ue_gflops: float
    es_gflops: float

    def as_row(self) -> dict[str, float]:
        return asdict(self)


def scheme_compute(scheme: Any, parts: ComputeParts, ue_steps_run: float = 0.0) -> Compute:
    """UE and ES computation per image of a built ``scheme`` (each scheme says its own:
    ``compute``); for ``X+dm``, ``ue_steps_run`` is the DDIM steps its receiver actually ran per
    image (the cell's mean, finite and >= 0)."""
    if is_dm(scheme.name):
        n = float(ue_steps_run)
        if n < 0 or not math.isfinite(n):
            raise ValueError(f"{scheme.name}: ue_steps_run must be finite and >= 0, got {n}")
        evals, ue, es = scheme.compute(parts, n)
    else:
        evals, ue, es = scheme.compute(parts)
    return Compute(ue_unet_evals=float(evals), ue_gflops=float(ue), es_gflops=float(es))


def sweep_compute_parts(cfg: MegConfig, todo: Sequence[Cell], ctx: BuildContext) -> ComputeParts:
    """Per-image GFLOPs of the generator's components, for the sweep's cells."""
    return ComputeParts.measure(_costed_pipeline(cfg, todo, ctx.pipeline), ctx.latent_shape,
                                cfg.generation.num_inference_steps, cfg.generation.guidance_scale)


def _costed_pipeline(cfg: MegConfig, cells: Sequence[Cell], load: Callable[[], Any]) -> Any:
    """The pipeline whose components are costed: at SD-v1.5 size (``paper``, ``sd15-random``)
    the exact architecture on the ``meta`` device (FLOPs depend on shapes only; no 4 GB of
    weights just to count), unless a scheme runs the pipeline anyway; else the loaded one."""
    if cfg.model in ("paper", "sd15-random") and not any(runs_generator(c.scheme) for c in cells):
        return SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=MAX_LENGTH),
                               **build_components(device="meta"))
    return load()


def cell_compute_columns(cell: Cell, metrics: dict, scheme: Any,
                         parts: ComputeParts) -> dict[str, float]:
    """``ue_unet_evals``, ``ue_gflops``, ``es_gflops`` of a sweep cell; for X+dm from the U-Net
    evaluations its receiver reported (``metrics``), averaged over the cell's images."""
    steps = 0.0
    if is_dm(cell.scheme):
        steps = float(metrics.get("ue_unet_evals", 0.0)) / parts.evals_per_step
    return scheme_compute(scheme, parts, steps).as_row()
