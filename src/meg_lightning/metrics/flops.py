"""GFLOPs per image of each component a scheme runs: the VAE decoder D, one U-Net evaluation, the
text encoder, a codec's encoder and decoder, the linear code and the LDPC decoder.

Each is measured once per (module, input shape) and cached. :class:`ComputeParts` holds the
generator's components (what every scheme's UE or ES cost is made of); each scheme adds its own
coders (``compute`` of :mod:`meg_lightning.schemes`), and :mod:`meg_lightning.evaluation.compute`
turns them into the results columns.

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
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

GIGA = 1e9

# -- counting ---------------------------------------------------------------------------------


def _custom_flop_mapping() -> dict:
    """Formulas FlopCounterMode lacks: the CPU flash-attention kernel of SDPA (see the module
    docstring); the GPU kernels already have this formula."""

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flop} if op is not None else {}


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one attention call from the shapes (B, heads, L, d) of q, k, v: torch's formula
    for the GPU kernels (the two batched matrix products)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def gflops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """GFLOPs of one call ``fn(*args, **kwargs)``, counted by ``FlopCounterMode`` under no_grad
    (1 multiply-add = 2 FLOPs; element-wise ops are not counted; module docstring).

    Works on the ``meta`` device too (only shapes matter), so a model can be costed without
    allocating its weights.
    """

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
    nn.Module, e.g. :class:`~meg_lightning.codecs.CodecModule` or a ``CompressionEncoder``."""

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
    """A :class:`~meg_lightning.codecs.LinearCode`'s ``encode(z, snr_db)`` on one latent, counted:
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



@dataclass
class ComputeParts:
    """Per-image GFLOPs of the generator's components and the generation settings they combine
    with (build one with :meth:`measure`, or by hand in tests)."""

    vae_decode: float
    unet_eval: float  # one U-Net evaluation at batch 1
    text_encoder: float  # one prompt
    es_steps: int  # DDIM steps of the ES (and of the UE in ``prompt``)
    guidance_scale: float  # > 1: two U-Net evaluations per step

    @property
    def evals_per_step(self) -> int:
        """U-Net evaluations per DDIM step: 2 with classifier-free guidance (> 1), else 1."""
        return 2 if self.guidance_scale > 1 else 1

    @property
    def generation(self) -> float:
        """GFLOPs of generating one latent: text encoder + es_steps guided U-Net steps."""
        return self.text_encoder + self.es_steps * self.evals_per_step * self.unet_eval

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def measure(cls, pipe: Any, latent_shape: Sequence[int], es_steps: int,
                guidance_scale: float) -> "ComputeParts":
        """Measure the VAE decoder, one U-Net evaluation and the text encoder of ``pipe`` (a
        StableDiffusionPipeline: ``unet``, ``vae``, ``text_encoder``, ``tokenizer``) with
        :func:`gflops` (cached per module and shape)."""

        shape = _shape3(latent_shape)
        text_shape = text_embedding_shape(pipe)
        return cls(vae_decode=vae_decode_gflops(pipe.vae, shape),
                   unet_eval=unet_eval_gflops(pipe.unet, shape, text_shape),
                   text_encoder=text_encoder_gflops(pipe.text_encoder, text_shape[0]),
                   es_steps=int(es_steps), guidance_scale=float(guidance_scale))

    def format(self) -> str:
        """A short multi-line summary (GFLOPs per image)."""
        return "\n".join([
            f"U-Net evaluation      {self.unet_eval:.6g}  (x {self.evals_per_step} per DDIM "
            f"step, {self.es_steps} steps: {self.es_steps * self.evals_per_step} evaluations)",
            f"text encoder          {self.text_encoder:.6g}",
            f"VAE decoder           {self.vae_decode:.6g}",
            f"generation (ES)       {self.generation:.6g}"])
