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

Counting conventions:

- FLOPs are what ``torch.utils.flop_counter.FlopCounterMode`` counts (:func:`gflops`): matrix
  products, convolutions and attention, with **1 multiply-add = 2 FLOPs** (an ``nn.Linear(a, b)``
  on one vector is 2ab FLOPs; its bias add is not counted). Element-wise work (activations,
  normalisations, softmax, the DDIM update, power normalisation, the channel) is not counted: it
  is a few per cent of a U-Net or VAE and zero in this convention.
- On the CPU, PyTorch runs ``F.scaled_dot_product_attention`` as
  ``aten._scaled_dot_product_flash_attention_for_cpu``, which FlopCounterMode (torch 2.14) has no
  formula for and would count as 0; :func:`gflops` maps it to the same formula as the GPU kernels
  (4 * B * heads * L_q * L_k * d: the two attention matrix products), so a diffusers U-Net or CLIP
  text encoder counts the same on CPU and GPU.
- A linear code of k symbols on a latent of |z| entries costs one (k x |z|) or (|z| x k)
  matrix-vector product: ``2 k |z|`` FLOPs (:func:`linear_code_gflops`).
- The LDPC decoder (``digital``) is counted approximately (:func:`ldpc_decode_gflops`)::

      GFLOPs = num_iter * edges * ops_per_edge / 1e9,   edges = edges_per_bit * coded_bits,
      coded_bits = symbols * bits_per_symbol

  with defaults num_iter = 20 (Sionna's LDPC5GDecoder), edges_per_bit = 316 / 66 (5G NR base
  graph 1: 316 edges per 68 - 2 = 66 transmitted columns, i.e. per coded bit of the rate-1/3
  mother code), ops_per_edge = 6 (flooding min-sum: variable-node add and extrinsic subtract,
  check-node min1/min2 compares, sign and offset) and bits_per_symbol = 4 (256-QAM, the top of
  the MCS table: 8 bits per complex use = 4 per real symbol, so an upper bound; the cost scales
  linearly with the modulation order actually used).
- PNG encoding/decoding and the digital quantiser are integer / table work: 0 GFLOPs here.
- The text encoder is counted once per image (the prompt at the tokenizer's full length, which
  is what the pipeline runs). With guidance > 1 the pipeline also encodes the empty negative
  prompt; that embedding is a constant the UE computes once and keeps, so it is not counted.

Component costs are measured once per (module, input shape) and cached (:class:`ComputeParts`
holds them), so the sweep can call :func:`scheme_compute` per cell at no cost.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

GIGA = 1e9

#: suffix of a generative-receiver scheme (``meg+dm``): the UE denoises its latent estimate
DM_SUFFIX = "+dm"
#: the columns every results row gets (:func:`compute_columns`)
COMPUTE_COLUMNS = ("ue_unet_evals", "ue_gflops", "es_gflops")

# -- counting ---------------------------------------------------------------------------------


def _custom_flop_mapping() -> dict:
    """Formulas FlopCounterMode lacks: the CPU flash-attention kernel of SDPA (see the module
    docstring); the GPU kernels already have this formula."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flop} if op is not None else {}


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one attention call from the shapes (B, heads, L, d) of q, k, v: torch's formula
    for the GPU kernels (the two batched matrix products)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def gflops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """GFLOPs of one call ``fn(*args, **kwargs)``, counted by ``FlopCounterMode`` under no_grad
    (1 multiply-add = 2 FLOPs; element-wise ops are not counted; module docstring).

    Works on the ``meta`` device too (only shapes matter), so a model can be costed without
    allocating its weights.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping())
    with torch.no_grad(), counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / GIGA


#: (kind, id(module), shapes) -> (weak reference to the module, GFLOPs)
_CACHE: dict[tuple, tuple[Any, float]] = {}


def clear_cache() -> None:
    """Forget every cached measurement."""
    _CACHE.clear()


def _cached(kind: str, module: Any, shapes: tuple, measure: Callable[[], float]) -> float:
    """``measure()`` once per (kind, module, shapes). The key holds ``id(module)``; a weak
    reference guards against a new module that reuses the id of a collected one."""
    key = (kind, id(module), shapes)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is module:
        return hit[1]
    value = float(measure())
    try:
        ref = weakref.ref(module)
    except TypeError:  # not weak-referenceable: do not cache
        return value
    _CACHE[key] = (ref, value)
    return value


def _device_dtype(module: Any) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's first parameter (or buffer); CPU float32 if none."""
    if isinstance(module, nn.Module):
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _shape3(latent_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in latent_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"latent_shape must be (C, h, w) with positive sizes, "
                         f"got {latent_shape!r}")
    return shape  # type: ignore[return-value]


# -- component costs (GFLOPs of one image, batch 1) -------------------------------------------


def vae_decode_gflops(vae: nn.Module, latent_shape: Sequence[int]) -> float:
    """The VAE decoder D (``vae.decode``) on one latent (1, C, h, w)."""
    shape = _shape3(latent_shape)

    def measure() -> float:
        dev, dt = _device_dtype(vae)
        return gflops(vae.decode, torch.zeros(1, *shape, device=dev, dtype=dt))

    return _cached("vae_decode", vae, shape, measure)


def text_embedding_shape(pipe: Any) -> tuple[int, int]:
    """(tokens, width) of the pipeline's prompt embedding: the tokenizer's full length (the
    pipeline pads every prompt to it) by the text encoder's hidden size."""
    return (int(pipe.tokenizer.model_max_length), int(pipe.text_encoder.config.hidden_size))


def unet_eval_gflops(unet: nn.Module, latent_shape: Sequence[int],
                     text_shape: Sequence[int]) -> float:
    """One U-Net evaluation at batch 1: latent (1, C, h, w), one timestep, text embedding
    (1, tokens, width). A guided DDIM step is two of these."""
    shape = _shape3(latent_shape)
    tshape = tuple(int(s) for s in text_shape)
    if len(tshape) != 2:
        raise ValueError(f"text_shape must be (tokens, width), got {text_shape!r}")

    def measure() -> float:
        dev, dt = _device_dtype(unet)
        x = torch.zeros(1, *shape, device=dev, dtype=dt)
        t = torch.full((1,), 500, device=dev, dtype=torch.long)
        emb = torch.zeros(1, *tshape, device=dev, dtype=dt)
        return gflops(unet, x, t, encoder_hidden_states=emb)

    return _cached("unet_eval", unet, shape + tshape, measure)


def text_encoder_gflops(text_encoder: nn.Module, tokens: int) -> float:
    """The text encoder on one prompt padded to ``tokens`` tokens (what the pipeline runs)."""
    tokens = int(tokens)

    def measure() -> float:
        dev, _ = _device_dtype(text_encoder)
        return gflops(text_encoder, torch.zeros(1, tokens, device=dev, dtype=torch.long))

    return _cached("text_encoder", text_encoder, (tokens,), measure)


def codec_encode_gflops(codec: Any, latent_shape: Sequence[int]) -> float:
    """A codec's ``encode`` (or its forward when it has none) on one latent (1, C, h, w): any
    nn.Module, e.g. :class:`~meg_lightning.codec.CodecModule` or a ``CompressionEncoder``."""
    shape = _shape3(latent_shape)

    def measure() -> float:
        dev, dt = _device_dtype(codec)
        return gflops(getattr(codec, "encode", codec), torch.zeros(1, *shape, device=dev, dtype=dt))

    return _cached("codec_encode", codec, shape, measure)


def codec_decode_gflops(codec: Any, k: int) -> float:
    """A codec's ``decode`` (or its forward when it has none) on one received seed (1, k)."""
    k = int(k)

    def measure() -> float:
        dev, dt = _device_dtype(codec)
        return gflops(getattr(codec, "decode", codec), torch.zeros(1, k, device=dev, dtype=dt))

    return _cached("codec_decode", codec, (k,), measure)


def code_length_of(codec: Any, latent_shape: Sequence[int]) -> int:
    """k of a codec: its ``k`` attribute (or its encoder's), else the size of one encoded latent."""
    for obj in (codec, getattr(codec, "encoder", None)):
        k = getattr(obj, "k", None)
        if isinstance(k, int) and k > 0:
            return k
    shape = _shape3(latent_shape)
    dev, dt = _device_dtype(codec)
    with torch.no_grad():
        x = getattr(codec, "encode", codec)(torch.zeros(1, *shape, device=dev, dtype=dt))
    return int(x[0].numel())


def linear_code_gflops(k: int, numel: int) -> float:
    """One matrix-vector product with a (k x |z|) or (|z| x k) matrix: 2 k |z| FLOPs
    (1 multiply-add = 2 FLOPs, FlopCounterMode's convention). The KLT encoder is one, the LMMSE
    decoder another; the mean shift and per-component gains are element-wise (0)."""
    if int(k) <= 0 or int(numel) <= 0:
        raise ValueError(f"k and |z| must be positive, got k={k}, |z|={numel}")
    return 2.0 * int(k) * int(numel) / GIGA


def linear_encode_gflops(code: Any, latent_shape: Sequence[int], snr_db: float = 20.0) -> float:
    """A :class:`~meg_lightning.codec.LinearCode`'s ``encode(z, snr_db)`` on one latent, counted:
    2 r |z| with r <= k the principal components it keeps (= :func:`linear_code_gflops` when
    r = k)."""
    shape = _shape3(latent_shape)

    def measure() -> float:
        dev, dt = _device_dtype(code)
        return gflops(code.encode, torch.zeros(1, *shape, device=dev, dtype=dt), snr_db)

    return _cached("linear_encode", code, shape, measure)


def linear_decode_gflops(code: Any, k: int, snr_db: float = 20.0) -> float:
    """A LinearCode's LMMSE ``decode(x_hat, snr_db)`` on one received vector (1, k), counted."""
    k = int(k)

    def measure() -> float:
        dev, dt = _device_dtype(code)
        return gflops(code.decode, torch.zeros(1, k, device=dev, dtype=dt), snr_db)

    return _cached("linear_decode", code, (k,), measure)


#: defaults of :func:`ldpc_decode_gflops` (module docstring)
LDPC_NUM_ITER = 20
LDPC_EDGES_PER_BIT = 316 / 66
LDPC_OPS_PER_EDGE = 6
LDPC_BITS_PER_SYMBOL = 4.0


def ldpc_decode_gflops(symbols: int, *, bits_per_symbol: float = LDPC_BITS_PER_SYMBOL,
                       num_iter: int = LDPC_NUM_ITER, edges_per_bit: float = LDPC_EDGES_PER_BIT,
                       ops_per_edge: float = LDPC_OPS_PER_EDGE) -> float:
    """Approximate belief-propagation LDPC decoding of ``symbols`` real channel symbols:
    num_iter * edges * ops_per_edge / 1e9 with edges = edges_per_bit * symbols * bits_per_symbol
    (module docstring for the defaults). The demapper's LLRs are element-wise (not counted)."""
    if symbols < 0 or bits_per_symbol <= 0 or num_iter <= 0:
        raise ValueError(f"need symbols >= 0, bits_per_symbol > 0 and num_iter > 0, got "
                         f"{symbols}, {bits_per_symbol}, {num_iter}")
    coded_bits = float(symbols) * bits_per_symbol
    return num_iter * edges_per_bit * coded_bits * ops_per_edge / GIGA


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
    from meg_lightning.evaluation import registry

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
