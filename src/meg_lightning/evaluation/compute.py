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
decoder approximately) is in :mod:`.flops`, which measures each component.

Component costs are measured once per (module, input shape) and cached (:class:`ComputeParts`
holds them), so the sweep can call :func:`scheme_compute` per cell at no cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from meg_lightning.evaluation import registry
from meg_lightning.evaluation.flops import (
    _shape3,
    code_length_of,
    codec_decode_gflops,
    codec_encode_gflops,
    ldpc_decode_gflops,
    linear_code_gflops,
    linear_decode_gflops,
    linear_encode_gflops,
    text_embedding_shape,
    text_encoder_gflops,
    unet_eval_gflops,
    vae_decode_gflops,
)

if TYPE_CHECKING:
    from meg_lightning.config import MegConfig
    from meg_lightning.evaluation.cells import Cell

#: suffix of a generative-receiver scheme (``meg+dm``): the UE denoises its latent estimate
DM_SUFFIX = "+dm"
#: the columns every results row gets (:func:`compute_columns`)
COMPUTE_COLUMNS = ("ue_unet_evals", "ue_gflops", "es_gflops")


# -- per scheme ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """One scheme's computation per image: the three results columns (module docstring)."""

    ue_unet_evals: float
    ue_gflops: float
    es_gflops: float

    def as_row(self) -> dict[str, float]:
        return asdict(self)


def _fc_key(fc: Any) -> float:
    return float(fc)


@dataclass
class ComputeParts:
    """Per-image GFLOPs of each component, and the generation settings they combine with.

    Dictionaries are keyed by the compression rate fc (float). Build one with :meth:`measure`
    (or by hand in tests), then call :func:`scheme_compute` per cell.
    """

    vae_decode: float
    unet_eval: float  # one U-Net evaluation at batch 1
    text_encoder: float  # one prompt
    es_steps: int  # DDIM steps of the ES (and of the UE in ``prompt``)
    guidance_scale: float  # > 1: two U-Net evaluations per step
    codec_encode: dict[float, float] = field(default_factory=dict)
    codec_decode: dict[float, float] = field(default_factory=dict)
    linear_encode: dict[float, float] = field(default_factory=dict)
    linear_decode: dict[float, float] = field(default_factory=dict)
    digital_decode: dict[float, float] = field(default_factory=dict)
    adaptive_encode: dict[float, float] = field(default_factory=dict)
    adaptive_decode: dict[float, float] = field(default_factory=dict)

    @property
    def evals_per_step(self) -> int:
        """U-Net evaluations per DDIM step: 2 with classifier-free guidance (> 1), else 1."""
        return 2 if self.guidance_scale > 1 else 1

    @property
    def generation(self) -> float:
        """GFLOPs of generating one latent: text encoder + es_steps guided U-Net steps."""
        return self.text_encoder + self.es_steps * self.evals_per_step * self.unet_eval

    def at(self, name: str, fc: Any) -> float:
        """``getattr(self, name)[fc]``; a ValueError naming what is missing otherwise."""
        table: Mapping[float, float] = getattr(self, name)
        if fc is None or (isinstance(fc, float) and math.isnan(fc)):
            raise ValueError(f"{name} needs a compression rate fc, got {fc!r}")
        for key, value in table.items():
            if math.isclose(float(key), float(fc), rel_tol=1e-9, abs_tol=1e-12):
                return value
        known = ", ".join(f"{float(k):g}" for k in sorted(table)) or "none"
        raise ValueError(f"no {name} cost for fc={float(fc):g} (measured for fc: {known})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def measure(cls, pipe: Any, latent_shape: Sequence[int], es_steps: int,
                guidance_scale: float, codecs: Optional[Mapping[Any, Any]] = None,
                linear_codes: Optional[Mapping[Any, Any]] = None,
                symbols: Optional[Mapping[Any, int]] = None, *,
                ldpc: Optional[Mapping[str, float]] = None,
                adaptive_codecs: Optional[Mapping[Any, Any]] = None) -> "ComputeParts":
        """Measure every component with :func:`gflops` (cached per module and shape).

        ``pipe``: a StableDiffusionPipeline (``unet``, ``vae``, ``text_encoder``, ``tokenizer``);
        ``latent_shape`` (C, h, w); ``codecs`` fc -> codec module (``encode`` / ``decode``);
        ``adaptive_codecs`` the same for `meg-adaptive`;
        ``linear_codes`` fc -> :class:`~meg_lightning.codec.LinearCode`, counted as they run, or
        None for the closed form 2 k |z| per side with k = ``symbols[fc]``; ``symbols`` fc ->
        real channel symbols per image (k of meg / linear, the budget of digital), which sets
        the LDPC decoder's cost (``ldpc``: keyword overrides of :func:`ldpc_decode_gflops`).
        """
        shape = _shape3(latent_shape)
        numel = math.prod(shape)
        text_shape = text_embedding_shape(pipe)
        parts = cls(vae_decode=vae_decode_gflops(pipe.vae, shape),
                    unet_eval=unet_eval_gflops(pipe.unet, shape, text_shape),
                    text_encoder=text_encoder_gflops(pipe.text_encoder, text_shape[0]),
                    es_steps=int(es_steps), guidance_scale=float(guidance_scale))
        symbols = {_fc_key(f): int(n) for f, n in (symbols or {}).items()}
        for table, enc, dec in ((codecs, parts.codec_encode, parts.codec_decode),
                                 (adaptive_codecs, parts.adaptive_encode, parts.adaptive_decode)):
            for fc, codec in (table or {}).items():
                enc[_fc_key(fc)] = codec_encode_gflops(codec, shape)
                dec[_fc_key(fc)] = codec_decode_gflops(codec, code_length_of(codec, shape))
        if linear_codes is not None:
            for fc, code in linear_codes.items():
                fc = _fc_key(fc)
                parts.linear_encode[fc] = linear_encode_gflops(code, shape)
                parts.linear_decode[fc] = linear_decode_gflops(code, int(code.k))
        for fc, n in symbols.items():
            if linear_codes is None:
                parts.linear_encode[fc] = parts.linear_decode[fc] = linear_code_gflops(n, numel)
            parts.digital_decode[fc] = ldpc_decode_gflops(n, **dict(ldpc or {}))
        return parts


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def scheme_compute(scheme: str, *, parts: ComputeParts, fc: Any = None,
                   ue_steps_run: Optional[float] = 0.0) -> Compute:
    """UE and ES computation per image of ``scheme`` (table in the module docstring): each
    scheme class says its own (``compute`` in evaluation.registry's classes); ``X+dm`` adds the
    text encoder and ``ue_steps_run`` guided U-Net steps to X's UE cost.

    ``fc``: the compression rate of the schemes that have one. ``ue_steps_run``: for ``X+dm``,
    the DDIM steps the receiver actually ran per image (the cell's mean, a float); ignored when
    0 / None / nan for other schemes, a ValueError when positive there.
    """
    try:
        cls = registry.scheme_class(str(scheme))
    except KeyError as e:
        raise ValueError(f"{e.args[0]} (for the compute axis)") from None
    dm = str(scheme).endswith(DM_SUFFIX)
    evals, ue, es = cls.compute(parts, fc)
    if dm:
        if _is_missing(ue_steps_run):
            raise ValueError(f"{scheme}: ue_steps_run (DDIM steps the UE ran per image) is "
                             f"required, got {ue_steps_run!r}")
        n = float(ue_steps_run)
        if n < 0 or not math.isfinite(n):
            raise ValueError(f"{scheme}: ue_steps_run must be finite and >= 0, got {n}")
        evals = n * parts.evals_per_step
        ue += evals * parts.unet_eval + (parts.text_encoder if n > 0 else 0.0)
    elif not _is_missing(ue_steps_run) and float(ue_steps_run) > 0:
        raise ValueError(f"{scheme}: ue_steps_run={ue_steps_run} but only X{DM_SUFFIX} schemes "
                         "run U-Net steps at the UE after the channel")
    return Compute(ue_unet_evals=float(evals), ue_gflops=float(ue), es_gflops=float(es))


def compute_columns(scheme: str, *, parts: ComputeParts, fc: Any = None,
                    ue_steps_run: Optional[float] = 0.0) -> dict[str, float]:
    """The results-row columns ``ue_unet_evals``, ``ue_gflops``, ``es_gflops`` of a cell."""
    return scheme_compute(scheme, parts=parts, fc=fc, ue_steps_run=ue_steps_run).as_row()


def format_parts(parts: ComputeParts) -> str:
    """A short multi-line summary of the measured component costs (GFLOPs per image)."""
    lines = [f"U-Net evaluation      {parts.unet_eval:.6g}  (x {parts.evals_per_step} per DDIM "
             f"step, {parts.es_steps} steps: {parts.es_steps * parts.evals_per_step} evaluations)",
             f"text encoder          {parts.text_encoder:.6g}",
             f"VAE decoder           {parts.vae_decode:.6g}",
             f"generation (ES)       {parts.generation:.6g}"]
    for name in ("codec_encode", "codec_decode", "linear_encode", "linear_decode",
                 "digital_decode"):
        for fc, v in sorted(getattr(parts, name).items()):
            lines.append(f"{name + f' fc={fc:g}':<22}{v:.6g}")
    return "\n".join(lines)


# -- in the sweep (evaluation.sweep) -----------------------------------------------------------


def sweep_compute_parts(cfg: MegConfig, cells: Sequence[Cell], todo: Sequence[Cell],
                        ctx: registry.BuildContext) -> ComputeParts:
    """Per-image GFLOPs of every component the sweep's cells use: the symbols of every rate in
    ``cells``, the codecs (from ``ctx``) of the rates the cells still ``todo`` use."""
    from meg_lightning.codec.components import code_length
    rated = {c.fc for c in cells if c.fc is not None}
    numel = math.prod(ctx.latent_shape)

    def of(family: str, load: Callable[[float], Any]) -> dict[float, Any]:
        """fc -> the code of ``family`` for every rate the cells to compute use."""
        return {fc: load(fc) for fc in {c.fc for c in todo if c.fc is not None
                                        and registry.base_name(c.scheme) == family}}

    return ComputeParts.measure(
        _costed_pipeline(cfg, todo, ctx.pipeline), ctx.latent_shape,
        cfg.generation.num_inference_steps,
        cfg.generation.guidance_scale,
        codecs=of("meg", ctx.codec), adaptive_codecs=of("meg-adaptive", ctx.adaptive_codec),
        linear_codes=of("linear", ctx.linear_code),
        symbols={fc: code_length(fc, numel) for fc in rated})


def _costed_pipeline(cfg: MegConfig, cells: Sequence[Cell], load: Callable[[], Any]) -> Any:
    """The pipeline whose components are costed: at SD-v1.5 size (``paper``, ``sd15-random``)
    the exact architecture on the ``meta`` device (FLOPs depend on shapes only; no 4 GB of
    weights just to count), unless a scheme runs the pipeline anyway; else the loaded one."""
    if cfg.model in ("paper", "sd15-random") and not any(registry.runs_generator(c.scheme)
                                                         for c in cells):
        from types import SimpleNamespace

        from meg_lightning.generation.sd15 import MAX_LENGTH, build_components

        return SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=MAX_LENGTH),
                               **build_components(device="meta"))
    return load()


def cell_compute_columns(cell: Cell, metrics: dict, parts: ComputeParts) -> dict[str, float]:
    """``ue_unet_evals``, ``ue_gflops``, ``es_gflops`` of a sweep cell; for X+dm from the U-Net
    evaluations its receiver reported (``metrics``), averaged over the cell's images."""
    steps = 0.0
    if cell.scheme.endswith(registry.DM_SUFFIX):
        steps = float(metrics.get("ue_unet_evals", 0.0)) / parts.evals_per_step
    return compute_columns(cell.scheme, parts=parts, fc=cell.fc, ue_steps_run=steps)
