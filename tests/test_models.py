"""The two-stream model: published heads and initialisation, pretrained weights from a file, inference maps."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from fnac_lab.losses import similarity_maps
from fnac_lab.models import PretrainedWeightsError, create_model


def test_published_shapes_and_normalisation():
    model = create_model().eval()
    image, spec = torch.randn(2, 3, 224, 224), torch.randn(2, 1, 257, 200)
    img, aud = model(image, spec)
    assert img.shape == (2, 512, 7, 7) and aud.shape == (2, 512)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(2, 7, 7))
    torch.testing.assert_close(aud.norm(dim=1), torch.ones(2))
    assert model.visual.dropout.p == 0.9 and model.audio.dropout.p == 0.0
    assert model.audio.backbone.conv1.in_channels == 1 and model.audio.backbone.conv1.kernel_size == (7, 7)


def test_audio_pool_is_global_max():
    model = create_model(visual_stage=2, audio_stage=2, embed_dim=16).eval()
    spec = torch.randn(3, 1, 64, 50)
    feat = model.audio.backbone(spec)[-1]
    expected = F.normalize(model.audio.proj(feat.amax(dim=(2, 3))), dim=1)
    torch.testing.assert_close(model.audio(spec), expected)


def test_published_initialisation_statistics():
    torch.manual_seed(0)
    model = create_model()
    bn = torch.cat([m.weight.detach() for m in model.audio.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.005) and bn.std().item() == pytest.approx(0.02, abs=0.003)
    lin = model.audio.proj.weight.detach()
    assert lin.std().item() == pytest.approx(0.01, rel=0.05)  # torch truncates at +-2 (absolute)
    # the bias keeps PyTorch's default, uniform on +-1/sqrt(fan_in), as published
    bound = 1 / model.audio.proj.in_features ** 0.5
    bias = model.audio.proj.bias.detach()
    assert bias.abs().max().item() <= bound and bias.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
    conv = model.audio.backbone.layer1[0].conv1.weight.detach()  # 64 out, 3x3: fan_out = 576
    assert conv.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


def test_visual_weights_from_local_file(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    model = create_model(visual_weights=path)
    torch.testing.assert_close(model.visual.backbone.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(model.visual.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_pretrained_visual_stream_asks_timm_for_torchvision_weights(monkeypatch):
    """The published visual stream starts from torchvision's ImageNet ResNet-18, timm's ``tv_in1k`` tag (not
    timm's default ``a1_in1k`` recipe); checked without a network by intercepting timm."""
    asked = []
    real = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    create_model(visual_pretrained=True, visual_stage=2, audio_stage=2, embed_dim=8)
    assert asked[0] == ("resnet18.tv_in1k", True)
    assert timm.models.get_pretrained_cfg("resnet18.tv_in1k").hf_hub_id == "timm/resnet18.tv_in1k"
    from fnac_lab.config import TrainConfig
    assert TrainConfig().visual_backbone == "resnet18.tv_in1k"


def test_missing_or_unreachable_weights_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model(visual_weights=tmp_path / "nope.pth")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch the constant
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError, match="visual_weights="):
        create_model(visual_pretrained=True)


def test_localisation_map_is_upsampled_own_pair_similarity():
    model = create_model(visual_stage=2, audio_stage=2, embed_dim=32).eval()
    image, spec = torch.randn(4, 3, 48, 48), torch.randn(4, 1, 64, 50)
    maps = model.localise(image, spec)
    img, aud = model(image, spec)
    own = torch.stack([(img[b] * aud[b][:, None, None]).sum(0) / model.tau for b in range(4)])
    expected = F.interpolate(own[:, None], size=(224, 224), mode="bicubic", align_corners=False)[:, 0]
    assert maps.shape == (4, 224, 224)
    torch.testing.assert_close(maps, expected)
    assert torch.allclose(similarity_maps(img, aud, model.tau)[1, 1], own[1], atol=1e-5)
