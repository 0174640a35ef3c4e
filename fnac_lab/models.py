"""Two-stream audio-visual localiser built from timm backbones.

Published configuration (the defaults): an ImageNet-pretrained ResNet-18 visual stream whose last
stage map (512 x 7 x 7 at 224 px) goes through dropout (p = 0.9), a 1x1 conv to D = 512 and an L2
normalisation over channels; a ResNet-18 audio stream from scratch with one input channel, global
max pooling, dropout (p = 0), a linear layer to D = 512 and an L2 normalisation.
"""

from __future__ import annotations

import os
from typing import Protocol
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import own_maps, similarity_maps
from .metrics import MAP_SIZE
from .utils import UnsafeFileError, describe, load_torch_file

#: The published visual stream: ResNet-18 with torchvision's ImageNet weights (timm's ``tv_in1k`` tag; plain
#: ``resnet18`` would give timm's own ``a1_in1k`` training recipe).
VISUAL_BACKBONE = "resnet18.tv_in1k"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded (the message names the file or model)."""


def init_published(module: nn.Module) -> None:
    """Published initialisation of the parts that are not pretrained.

    Conv: Kaiming normal (fan_out, relu); linear: truncated normal (std 0.01); batch norm: weight
    N(1, 0.02), bias 0. Conv and linear biases keep PyTorch's default initialisation, as published.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.01)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, mean=1.0, std=0.02)
            nn.init.zeros_(m.bias)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (a plain mapping, or one under ``"state_dict"``)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_torch_file(path)
    except UnsafeFileError:
        raise
    except Exception as exc:  # torch and safetensors raise many types for a damaged file
        raise PretrainedWeightsError(f"{path}: not a readable state dict ({describe(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return state


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a weights file into a ``features_only`` timm backbone, every key checked.

    The file may hold the whole network (an ImageNet ResNet-18 with its classifier, as torchvision and
    timm save it) or only the stages the backbone keeps (``fnac-lab pretrain``). timm's own file loader
    is not used: for feature backbones it loads non-strictly, so a file whose keys do not fit would load
    nothing and only warn.
    """
    path = Path(path)
    state = read_state_dict(path)
    own = backbone.state_dict()
    known = set(timm.create_model(name, pretrained=False).state_dict())
    strangers = sorted(k for k in state if k not in own and k not in known)
    missing = sorted(k for k in own if k not in state)
    reshaped = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    for problem, keys in (("has keys that timm model %r does not" % name, strangers),
                          ("lacks keys of timm model %r" % name, missing),
                          ("has other shapes than timm model %r" % name, reshaped)):
        if keys:
            raise PretrainedWeightsError(f"{path}: {problem} ({len(keys)}, first: {keys[0]!r}); "
                                         f"is it a state dict of that model?")
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)


def feature_backbone(name: str, stage: int, *, in_chans: int = 3, pretrained: bool = False,
                      weights: str | os.PathLike | None = None) -> nn.Module:
    """A timm backbone returning the feature map of one stage (``features_only``)."""
    kwargs = dict(features_only=True, out_indices=(stage,), in_chans=in_chans)
    if pretrained and weights is None:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:
            raise PretrainedWeightsError(
                f"cannot fetch pretrained weights for {name!r} ({type(exc).__name__}); without a network, "
                f"download them elsewhere and pass a local file with visual_weights=/path/to/{name}.safetensors"
            ) from exc
    try:
        backbone = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:
        raise ValueError(f"cannot build timm backbone {name!r} with stage {stage} ({exc})") from exc
    if weights is not None:
        load_backbone_weights(backbone, weights, name)
    return backbone


class VisualStream(nn.Module):
    """Backbone stage map -> dropout -> 1x1 conv -> [centring norm] -> L2 normalisation over channels."""

    def __init__(self, backbone: nn.Module, embed_dim: int = 512, dropout: float = 0.9, centre_norm: bool = False):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()[-1]
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Conv2d(channels, embed_dim, kernel_size=1)
        # Deviation from the paper (opt-in): a parameter-free batch norm that centres the projections.
        self.norm = nn.BatchNorm2d(embed_dim, affine=False) if centre_norm else nn.Identity()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(image)[-1]
        return F.normalize(self.norm(self.proj(self.dropout(feat))), dim=1)


class AudioStream(nn.Module):
    """Backbone stage map -> global max pool -> dropout -> linear -> [centring norm] -> L2 normalisation."""

    def __init__(self, backbone: nn.Module, embed_dim: int = 512, dropout: float = 0.0, centre_norm: bool = False):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()[-1]
        self.pool = timm.layers.SelectAdaptivePool2d(pool_type="max", flatten=True)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(channels, embed_dim)
        self.norm = nn.BatchNorm1d(embed_dim, affine=False) if centre_norm else nn.Identity()

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        feat = self.pool(self.backbone(spec)[-1])
        return F.normalize(self.norm(self.proj(self.dropout(feat))), dim=1)


class Localiser(Protocol):
    """What training, scoring and analysis ask of a model (PEP 544): ``model(image, spec)`` gives the L2-normalised
    visual maps ``[B, C, h, w]`` and audio embeddings ``[B, C]``, ``tau`` is its temperature, and ``eval()`` /
    ``train(mode)`` switch dropout and batch norm as a torch module does. :class:`AVLocaliser` is one."""

    tau: float
    training: bool

    def __call__(self, image: torch.Tensor, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval(self) -> "Localiser": ...

    def train(self, mode: bool = True) -> "Localiser": ...


class AVLocaliser(nn.Module):
    """The two streams, returning the normalised visual map ``[B, D, h, w]`` and audio embedding ``[B, D]``."""

    def __init__(self, visual: VisualStream, audio: AudioStream, tau: float = 0.03):
        super().__init__()
        self.visual = visual
        self.audio = audio
        self.tau = tau

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual(image), self.audio(spec)

    @torch.no_grad()
    def localise(self, image: torch.Tensor, spec: torch.Tensor, size: int = MAP_SIZE) -> torch.Tensor:
        """Inference maps ``[B, size, size]``: the own-pair similarity ``S[b, b]`` upsampled bicubically."""
        return self.maps_from_embeddings(*self(image, spec), size=size)

    def maps_from_embeddings(self, img: torch.Tensor, aud: torch.Tensor, size: int = MAP_SIZE) -> torch.Tensor:
        """:meth:`localise` from the two streams' outputs."""
        return upsample_maps(own_maps(similarity_maps(img, aud, self.tau)), size)


def upsample_maps(maps: torch.Tensor, size: int = MAP_SIZE) -> torch.Tensor:
    """``[B, h, w]`` to ``[B, size, size]``, bicubic, ``align_corners=False`` (the published upsampling)."""
    return F.interpolate(maps.unsqueeze(1).float(), size=(size, size), mode="bicubic", align_corners=False)[:, 0]


def create_model(
    *,
    visual_backbone: str = VISUAL_BACKBONE,
    visual_stage: int = 4,
    audio_backbone: str = "resnet18",
    audio_stage: int = 4,
    embed_dim: int = 512,
    visual_dropout: float = 0.9,
    audio_dropout: float = 0.0,
    centre_norm: bool = False,
    visual_pretrained: bool = False,
    visual_weights: str | os.PathLike | None = None,
    tau: float = 0.03,
) -> AVLocaliser:
    """Build the localiser. ``visual_weights`` (a local file) or ``visual_pretrained=True`` (timm hub,
    needs a network) load pretrained visual weights; everything else gets the published initialisation."""
    pretrained = visual_pretrained or visual_weights is not None
    vis_backbone = feature_backbone(visual_backbone, visual_stage, pretrained=visual_pretrained, weights=visual_weights)
    aud_backbone = feature_backbone(audio_backbone, audio_stage, in_chans=1)
    visual = VisualStream(vis_backbone, embed_dim, visual_dropout, centre_norm)
    audio = AudioStream(aud_backbone, embed_dim, audio_dropout, centre_norm)
    init_published(audio)
    init_published(visual.proj)
    if not pretrained:
        init_published(visual.backbone)
    return AVLocaliser(visual, audio, tau=tau)
