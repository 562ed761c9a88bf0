"""CLIP score: how well the UE's image I_g still matches its prompt (higher is better).

Hessel et al. (2021), with torchmetrics' scale (``torchmetrics.multimodal.CLIPScore``): for an
image I with CLIP image embedding E_I and its caption C with CLIP text embedding E_C,

    CLIPScore(I, C) = max(100 cos(E_I, E_C), 0),

per image; the sweep reports the mean over the test images (``clip_score``) beside the same mean
for the perfect images I_0 (``clip_score_ref``, the ceiling). Images are scored as 8-bit pixels
(as saved), prompts are truncated to the text tower's context (77 tokens for OpenAI's CLIP).

:class:`ClipScorer` takes any image encoder ([0, 1] images -> (B, d)) and text encoder (prompts
-> (N, d)); the sweep encodes the test prompts once and every cell's images. The real one
(:func:`make_clip_score`) is a ``transformers`` ``CLIPModel`` with its processor, read from local
files only:

- ``$MEG_CLIP_MODEL``: a local folder (``save_pretrained`` / ``huggingface-cli download
  --local-dir``) or a hub id already in the Hugging Face cache;
- else ``openai/clip-vit-large-patch14`` (torchmetrics' default, the ViT-L/14 whose text tower
  SD-v1.5 conditions on) if it is in the Hugging Face cache.

Without either :func:`make_clip_score` returns None after one warning line that says how to
provide it: the ``clip_score`` columns stay empty; there is no stand-in. torchmetrics' own
``CLIPScore`` is not used: with transformers >= 5 its feature call returns a ``ModelOutput``, not a
tensor (Lightning-AI/torchmetrics#3407), and it gives no per-image scores.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from meg_lightning.errors import MissingWeightsError

MODEL_ENV = "MEG_CLIP_MODEL"  # a local folder or a cached hub id, or "none" to skip CLIP score
DEFAULT_MODEL = "openai/clip-vit-large-patch14"
DISABLED = ("none", "off")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _unit(e: Tensor) -> Tensor:
    return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class ClipScorer(nn.Module):
    """CLIP score of images against prompts with any pair of encoders.

    ``image_encoder``: [0, 1] images (B, 3, H, W) -> (B, d); ``text_encoder``: a list of N
    prompts -> (N, d). ``name`` labels the results (column ``clip_model``).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, name: str = "custom"):
        super().__init__()
        self.image_encoder, self.text_encoder, self.name = image_encoder, text_encoder, name
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ClipScorer":  # always in evaluation mode
        return super().train(False)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """Unit image embeddings (B, d) of [0, 1] images (B, 3, H, W)."""
        return _unit(self.image_encoder(images.float().clamp(0, 1)).float())

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """Unit text embeddings (N, d) of N prompts."""
        return _unit(self.text_encoder(list(prompts)).float())

    @staticmethod
    def score(image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """max(100 cos, 0) of each pair (image_emb[i], text_emb[i]) of unit embeddings, (B,)."""
        if image_emb.shape != text_emb.shape:
            raise ValueError(f"one prompt per image: got embeddings {tuple(image_emb.shape)} and "
                             f"{tuple(text_emb.shape)}")
        return (100 * (image_emb * text_emb.to(image_emb.device)).sum(-1)).clamp_min(0)

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """CLIP score of each image against its prompt, (B,)."""
        if len(images) != len(prompts):
            raise ValueError(f"one prompt per image: got {len(images)} images and "
                             f"{len(prompts)} prompts")
        return self.score(self.encode_images(images), self.encode_text(prompts))


def _embeds(out) -> Tensor:
    """The projected embeddings of ``get_*_features``: a tensor (transformers < 5) or a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` they are (transformers >= 5)."""
    return out if isinstance(out, Tensor) else out.pooler_output


class HFImageEncoder(nn.Module):
    """A ``transformers`` CLIP image tower with its image processor: [0, 1] images -> (B, d)."""

    def __init__(self, model: nn.Module, image_processor):
        super().__init__()
        self.model, self.image_processor = model, image_processor

    def forward(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # as saved (8-bit)
        inputs = self.image_processor(images=list(pixels), return_tensors="pt")
        return _embeds(self.model.get_image_features(
            pixel_values=inputs["pixel_values"].to(device)))


class HFTextEncoder(nn.Module):
    """A ``transformers`` CLIP text tower with its tokenizer: prompts -> (N, d); prompts are cut
    to the tower's context length."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def forward(self, prompts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_len,
                             return_tensors="pt")
        return _embeds(self.model.get_text_features(
            input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device)))


def clip_disabled() -> bool:
    """Whether ``MEG_CLIP_MODEL=none``: CLIP score is not wanted (no warning, empty columns)."""
    return os.environ.get(MODEL_ENV, "").strip().lower() in DISABLED


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - only when asked

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid repo id
        return False


def clip_model_source() -> Optional[str]:
    """Where the CLIP model is, without the network: ``$MEG_CLIP_MODEL`` (a folder with a
    ``config.json``, or a hub id in the Hugging Face cache), else :data:`DEFAULT_MODEL` if it is
    cached; None when it would have to be downloaded."""
    want = os.environ.get(MODEL_ENV, "").strip()
    if want and not clip_disabled():
        p = Path(want).expanduser()
        if p.is_dir():
            return str(p) if (p / "config.json").is_file() else None
        return want if _HUB_ID.match(want) and _cached(want) else None
    return DEFAULT_MODEL if _cached(DEFAULT_MODEL) else None


def missing_clip_message() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415 - only for the message

    want = os.environ.get(MODEL_ENV, "").strip()
    looked = (f"${MODEL_ENV}={want} (a folder with config.json, or a hub id in {HF_HUB_CACHE})"
              if want else f"${MODEL_ENV} and {DEFAULT_MODEL} in {HF_HUB_CACHE}")
    return (f"CLIP score not computed (the clip_score columns stay empty): no CLIP model found "
            f"(looked at {looked}); run `huggingface-cli download {DEFAULT_MODEL}` once with "
            f"network, or set {MODEL_ENV}=<local folder or cached hub id> ({MODEL_ENV}=none "
            f"skips CLIP score without this warning)")


def load_clip_score(source: Optional[str] = None) -> ClipScorer:
    """The CLIP scorer of the ``transformers`` CLIP model at ``source`` (a local folder or a
    cached hub id; default :func:`clip_model_source`), loaded without the network;
    :class:`MissingWeightsError` (one line) when it is absent or cannot be loaded."""
    from transformers import CLIPModel, CLIPProcessor  # noqa: PLC0415 - heavy

    source = source or clip_model_source()
    if source is None:
        raise MissingWeightsError(missing_clip_message())
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
    except Exception as e:  # transformers' errors span lines: keep the first
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MissingWeightsError(f"the CLIP model {source!r} could not be loaded ({first}); "
                                  f"expected a transformers CLIPModel with its processor "
                                  f"(set {MODEL_ENV} to another, or to none)") from None
    name = source if not Path(source).is_dir() else Path(source).resolve().name
    return ClipScorer(HFImageEncoder(model, processor.image_processor),
                      HFTextEncoder(model, processor.tokenizer), name=name)


def make_clip_score(source: Optional[str] = None) -> Optional[ClipScorer]:
    """The real CLIP scorer when a CLIP model is present locally, else None after one warning
    line saying how to provide it (``MEG_CLIP_MODEL=none``: None without a warning)."""
    if source is None and clip_disabled():
        return None
    source = source or clip_model_source()
    if source is None:
        warnings.warn(missing_clip_message(), stacklevel=2)
        return None
    return load_clip_score(source)
