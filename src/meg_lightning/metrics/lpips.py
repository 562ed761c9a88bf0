"""LPIPS, the learned perceptual distance between I_g and the perfect image I_0 (lower is better).

Zhang et al. (2018): both images go through a fixed feature network; at each of its L layers the
features are unit-normalised along the channels, their squared difference is weighted per channel
by a learned non-negative vector w_l (a 1x1 convolution), averaged over the positions, and the L
layer terms are summed:

    LPIPS(x, y) = sum_l mean_{h,w} sum_c w_{l,c} (f^l_{hwc}(x)/|f^l_{hw}(x)| - f^l_{hwc}(y)/|f^l_{hw}(y)|)^2

It is 0 for identical images and symmetric. The definition and the input scaling are those of
torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` (a test checks equality); the feature
network is injectable (:class:`LPIPS`), which torchmetrics' class is not.

The real LPIPS (:func:`make_lpips`) needs two sets of weights, read from local files only:

- the backbone, torchvision's ImageNet AlexNet (default) or VGG-16 (``MEG_LPIPS_NET=vgg``):
  ``$MEG_LPIPS_WEIGHTS`` (a torchvision state dict), else torch.hub's cache
  ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`` (``vgg16-397923af.pth``), where
  ``torchvision.models.alexnet(weights="DEFAULT")`` puts it;
- the linear layers w_l (LPIPS v0.1), shipped inside torchmetrics
  (``torchmetrics/functional/image/lpips_models/{alex,vgg}.pth``).

Without them :func:`make_lpips` returns None after one warning line that says how to provide
them: the ``lpips`` column stays empty; there is no stand-in.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from meg_lightning.errors import MissingWeightsError, UserError

WEIGHTS_ENV = "MEG_LPIPS_WEIGHTS"  # the backbone's torchvision state dict, or "none" to skip LPIPS
NET_ENV = "MEG_LPIPS_NET"  # alex (default) | vgg
DISABLED = ("none", "off")

#: backbone -> (torchvision constructor, its ImageNet weight URL, the ReLU outputs LPIPS reads as
#: (start, stop) slices of ``.features``, the channels of those outputs)
BACKBONES = {
    "alex": ("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
             ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth",
            ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), (64, 128, 256, 512, 512)),
}

# LPIPS' input scaling of [-1, 1] images (the ImageNet statistics in that range)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _unit(f: Tensor, eps: float = 1e-8) -> Tensor:
    """Features (B, C, H, W) divided by their norm over the channels at every position."""
    return f / torch.sqrt(eps + f.square().sum(dim=1, keepdim=True))


class LPIPS(nn.Module):
    """LPIPS of [0, 1] image pairs (B, 3, H, W) -> (B,), with any feature network.

    ``features`` maps the scaled images to a sequence of L feature maps (B, C_l, H_l, W_l);
    ``weights``: the per-channel weights w_l (each (C_l,) or a 1x1 conv weight (1, C_l, 1, 1)),
    or None for w_l = 1 (unweighted). ``name`` labels the results (column ``lpips_net``).
    """

    def __init__(self, features: nn.Module, weights: Optional[Sequence[Tensor]] = None,
                 name: str = "custom"):
        super().__init__()
        self.features, self.name = features, name
        self.num_weights = 0 if weights is None else len(weights)
        for i, w in enumerate(weights or ()):
            w = torch.as_tensor(w, dtype=torch.float32).flatten()
            if (w < 0).any():
                raise ValueError(f"LPIPS layer weights must be >= 0 (layer {i})")
            self.register_buffer(f"w{i}", w)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":  # always in evaluation mode
        return super().train(False)

    def _scaled(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LPIPS needs RGB images (B, 3, H, W), got {tuple(images.shape)}")
        return ((2 * images.float().clamp(0, 1) - 1) - self.shift) / self.scale

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS of each pair (x[i], y[i]) of [0, 1] images, (B,) in float32."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS pairs must have the same shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        fx, fy = self.features(self._scaled(x)), self.features(self._scaled(y))
        if self.num_weights and len(fx) != self.num_weights:
            raise ValueError(f"the feature network gave {len(fx)} feature maps for "
                             f"{self.num_weights} layer weights")
        total = torch.zeros(len(x), device=x.device)
        for i, (a, b) in enumerate(zip(fx, fy)):
            d = (_unit(a.float()) - _unit(b.float())).square()  # (B, C_l, H_l, W_l)
            if self.num_weights:
                d = d * getattr(self, f"w{i}").view(1, -1, 1, 1)
            total = total + d.sum(dim=1).mean(dim=(1, 2))
        return total


class _Slices(nn.Module):
    """A torchvision ``features`` stack cut into consecutive slices; returns each slice's output."""

    def __init__(self, features: nn.Sequential, slices: Sequence[tuple[int, int]]):
        super().__init__()
        self.slices = nn.ModuleList(features[a:b] for a, b in slices)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out


def _net(net: Optional[str]) -> str:
    net = net or os.environ.get(NET_ENV) or "alex"
    if net not in BACKBONES:
        raise UserError(f"{NET_ENV}={net!r}: expected one of {', '.join(BACKBONES)}")
    return net


def _hub_file(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[net][1].rsplit("/", 1)[1]


def lpips_disabled() -> bool:
    """Whether ``MEG_LPIPS_WEIGHTS=none``: LPIPS is not wanted (no warning, empty column)."""
    return os.environ.get(WEIGHTS_ENV, "").strip().lower() in DISABLED


def lpips_weights_path(net: Optional[str] = None) -> Optional[Path]:
    """The local backbone weight file of LPIPS-``net`` (``$MEG_LPIPS_WEIGHTS``, else torch.hub's
    cache), or None when it is not there (it would have to be downloaded)."""
    if os.environ.get(WEIGHTS_ENV) and not lpips_disabled():
        p = Path(os.environ[WEIGHTS_ENV]).expanduser()
        return p if p.is_file() else None
    p = _hub_file(_net(net))
    return p if p.is_file() else None


def linear_weights_path(net: str) -> Optional[Path]:
    """LPIPS v0.1's linear-layer weights for ``net``, as torchmetrics ships them, or None."""
    spec = importlib.util.find_spec("torchmetrics.functional.image")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "lpips_models" / f"{net}.pth"
    return p if p.is_file() else None


def missing_lpips_message(net: Optional[str] = None) -> str:
    net = _net(net)
    where = (f"${WEIGHTS_ENV}={os.environ[WEIGHTS_ENV]}" if os.environ.get(WEIGHTS_ENV)
             else f"${WEIGHTS_ENV} and {_hub_file(net)}")
    if linear_weights_path(net) is None and lpips_weights_path(net) is not None:
        return (f"LPIPS not computed (the lpips column stays empty): torchmetrics ships no "
                f"LPIPS linear layers for {net!r} (lpips_models/{net}.pth); install torchmetrics "
                f">= 1.6 or set {WEIGHTS_ENV}=none")
    return (f"LPIPS not computed (the lpips column stays empty): {BACKBONES[net][0]} ImageNet "
            f"weights not found (looked at {where}); download {BACKBONES[net][1]} to "
            f"{_hub_file(net)} or set {WEIGHTS_ENV}=<file> ({NET_ENV}=alex|vgg picks the "
            f"backbone; {WEIGHTS_ENV}=none skips LPIPS without this warning)")


def _load_state(path: Path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's unpickling errors are paragraphs: name the kind only
        raise MissingWeightsError(f"{what} {str(path)!r} could not be read as a torch state dict "
                                  f"({type(e).__name__})") from None


def load_lpips(net: Optional[str] = None, weights: Optional[str | Path] = None) -> LPIPS:
    """LPIPS-``net`` (alex | vgg) with the backbone from ``weights`` (default
    :func:`lpips_weights_path`) and torchmetrics' linear layers; :class:`MissingWeightsError` (one
    line) when either is missing or is not what it should be."""
    import torchvision  # noqa: PLC0415 - only for the real backbone

    net = _net(net)
    path = Path(weights) if weights else lpips_weights_path(net)
    lin = linear_weights_path(net)
    if path is None or not path.is_file() or lin is None:
        raise MissingWeightsError(missing_lpips_message(net))
    arch, _, slices, channels = BACKBONES[net]
    state = _load_state(path, f"the LPIPS backbone ({arch}) weight file")
    state = {k.removeprefix("features."): v for k, v in state.items()
             if not k.startswith(("classifier.", "avgpool."))}
    with torch.device("meta"):
        features = getattr(torchvision.models, arch)(weights=None).features
    try:
        features.load_state_dict(state, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise MissingWeightsError(f"{str(path)!r} is not torchvision's {arch} state dict "
                                  f"({first}); expected {BACKBONES[net][1]}") from None
    lin_state = _load_state(lin, "the LPIPS linear-layer file")
    w = [lin_state[f"lin{i}.model.1.weight"] for i in range(len(channels))]
    return LPIPS(_Slices(features, slices), w, name=net)


def make_lpips(net: Optional[str] = None, weights: Optional[str | Path] = None
               ) -> Optional[LPIPS]:
    """The real LPIPS when its weights are present locally, else None after one warning line
    saying how to provide them (``MEG_LPIPS_WEIGHTS=none``: None without a warning)."""
    if weights is None and lpips_disabled():
        return None
    net = _net(net)
    if (weights is None and lpips_weights_path(net) is None) or linear_weights_path(net) is None:
        warnings.warn(missing_lpips_message(net), stacklevel=2)
        return None
    return load_lpips(net, weights)
