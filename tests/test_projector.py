"""The projector on a tiny registered open_clip config (random weights saved as a local checkpoint)."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helio_core import artifacts
from helio_core.errors import HelioError
from helio_core.models import lora
from helio_core.models.backbones import create_backbone
from helio_core.models.projector import ProjectorSpec, build_projector, images_sha256, load_projector, save_projector
from tests.conftest import REPO

CLASSES = ["cat", "dog", "ant"]
open_clip.add_model_config(REPO / "tests" / "fixtures" / "tiny-rn-clip.json")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random tiny-CLIP weights saved to a file, so that the backbone loads the same weights every time."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(open_clip.create_model("tiny-rn-clip").state_dict(), path)
    return path


def _spec(checkpoint, head_init="text", rank=4, head_rank=2):
    return ProjectorSpec(f"open_clip:tiny-rn-clip/{checkpoint}", None, "final", head_init, rank, 8.0, "all", head_rank)


def _images(n=6, channels=1, size=28):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


def test_untrained_projector_is_open_clips_zero_shot_classifier(checkpoint):
    projector = build_projector(_spec(checkpoint), CLASSES, logit_scale=100.0, seed=0).eval()
    model = open_clip.create_model("tiny-rn-clip", pretrained=str(checkpoint)).eval()
    tokenizer = open_clip.get_tokenizer("tiny-rn-clip")
    classifier = open_clip.build_zero_shot_classifier(model, tokenizer, CLASSES, open_clip.OPENAI_IMAGENET_TEMPLATES)
    images = torch.rand(4, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = 100.0 * F.normalize(model.encode_image((images - mean) / std), dim=-1) @ classifier
        got = projector(images)
    torch.testing.assert_close(projector.head.weight, classifier.T)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _train_a_little(projector):
    for parameter in projector.trainable_parameters():
        if parameter.dim() > 0:
            nn.init.normal_(parameter, std=0.05)


@pytest.mark.parametrize(
    ("head_init", "head_rank", "form"), [("text", 4, "dense"), ("text", 1, "lora"), ("random", 2, "merged")]
)
def test_save_load_round_trip_is_bit_exact_in_fp32(checkpoint, tmp_path, head_init, head_rank, form):
    projector = build_projector(
        _spec(checkpoint, head_init, head_rank=head_rank), CLASSES, logit_scale=10.0, seed=0
    ).eval()
    _train_a_little(projector)
    path = tmp_path / "p.safetensors"
    save_projector(path, projector, CLASSES, artifacts.sha256_json(CLASSES), {}, "fp32")
    loaded, metadata = load_projector(path)
    images = torch.rand(3, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(loaded(images), projector(images))
    assert metadata["head_form"] == form


def test_a_projector_on_random_backbone_weights_reloads_in_another_random_state(tmp_path):
    """`open_clip:<model>` without weights (the ImageNet-100 preset's RN50 on an offline machine) is one network
    whatever the random state: its file reloads after any other draw, as a later stage's process rebuilds it."""
    spec = ProjectorSpec("open_clip:tiny-rn-clip", None, "final", "random", 2, 8.0, "all", 2)
    torch.manual_seed(1)
    projector = build_projector(spec, CLASSES, logit_scale=10.0, seed=0).eval()
    path = tmp_path / "p.safetensors"
    save_projector(path, projector, CLASSES, artifacts.sha256_json(CLASSES), {}, "fp32")
    torch.manual_seed(2)
    loaded, _ = load_projector(path)
    images = torch.rand(3, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(loaded(images), projector(images))


def test_fp16_file_reloads_to_the_same_file(checkpoint, tmp_path):
    projector = build_projector(_spec(checkpoint), CLASSES, logit_scale=10.0, seed=0).eval()
    _train_a_little(projector)
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_projector(first, projector, CLASSES, artifacts.sha256_json(CLASSES), {}, "fp16")
    loaded, _ = load_projector(first)
    save_projector(second, loaded, CLASSES, artifacts.sha256_json(CLASSES), {}, "fp16")
    a, _ = artifacts.load_tensors(first)
    b, _ = artifacts.load_tensors(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(t.dtype == torch.float16 for k, t in a.items() if k != "logit_scale")


def test_head_lora_is_stored_as_factors_when_they_are_smaller(checkpoint, tmp_path):
    many = [f"class {i}" for i in range(40)]  # 40 x 32 dense > 2 * (40 + 32) factors
    projector = build_projector(_spec(checkpoint, head_rank=2), many, logit_scale=10.0, seed=0).eval()
    _train_a_little(projector)
    path = tmp_path / "p.safetensors"
    save_projector(path, projector, many, artifacts.sha256_json(many), {}, "fp32")
    loaded, metadata = load_projector(path)
    assert metadata["head_form"] == "lora"
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), projector(images))


def test_loading_checks_class_list_backbone_weights_and_format(checkpoint, tmp_path):
    projector = build_projector(_spec(checkpoint), CLASSES, logit_scale=10.0, seed=0)
    path = tmp_path / "p.safetensors"
    save_projector(path, projector, CLASSES, artifacts.sha256_json(CLASSES), {}, "fp16")
    with pytest.raises(HelioError, match="made for another class list"):
        load_projector(path, expected_classes_sha256=artifacts.sha256_json(["cat", "ant", "dog"]))

    other = open_clip.create_model("tiny-rn-clip")  # different random weights, same file name
    torch.save(other.state_dict(), checkpoint.parent / "other.pt")
    tensors, metadata = artifacts.load_tensors(path)
    metadata["spec"]["backbone"] = f"open_clip:tiny-rn-clip/{checkpoint.parent / 'other.pt'}"
    artifacts.save_tensors(tmp_path / "moved.safetensors", tensors, metadata)
    with pytest.raises(HelioError, match="made for other open_clip:tiny-rn-clip/.* weights"):
        load_projector(tmp_path / "moved.safetensors")

    metadata["format_version"] = 99
    artifacts.save_tensors(tmp_path / "future.safetensors", tensors, metadata)
    with pytest.raises(HelioError, match="helio format version 99"):
        load_projector(tmp_path / "future.safetensors")


def test_prototype_head_is_recomputed_from_the_images_on_load(checkpoint, tmp_path):
    images, labels = _images(), torch.tensor([0, 1, 2, 0, 1, 2])
    projector = build_projector(
        _spec(checkpoint, "prototypes"), CLASSES, images, labels, logit_scale=10.0, seed=0
    ).eval()
    _train_a_little(projector)
    path = tmp_path / "p.safetensors"
    extra = {"prototype_images_sha256": images_sha256(images)}
    save_projector(path, projector, CLASSES, artifacts.sha256_json(CLASSES), extra, "fp32")
    stored, _ = artifacts.load_tensors(path)
    assert not any(name.startswith("head.weight") for name in stored)  # the prototypes are not stored
    loaded, _ = load_projector(path, images, labels)
    base = loaded.head.parametrizations.weight.original
    assert torch.equal(base, projector.head.parametrizations.weight.original)
    with torch.no_grad():
        assert torch.equal(loaded(images.float() / 255), projector(images.float() / 255))
    with pytest.raises(HelioError, match="not the ones its prototype head was made from"):
        load_projector(path, images.flip(0), labels)


def test_text_head_needs_a_text_tower():
    with pytest.raises(HelioError, match="head_init=text needs a backbone with a text tower"):
        build_projector(
            ProjectorSpec("torchvision:resnet18", 32, "final", "text", 2, 2.0, "all", 0),
            CLASSES,
            logit_scale=10.0,
            seed=0,
        )


def test_rn50_conv_lora_count_matches_the_formula():
    backbone = create_backbone("open_clip:RN50")
    convs = [m for m in backbone.encoder.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55 and all(m.groups == 1 for m in convs)
    formula = sum(8 * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels) for m in convs)
    assert formula == lora.lora_parameter_count(convs, 8) == 639_704
    names = lora.add_lora(backbone.encoder.trunk, rank=8, alpha=8, targets=["*conv*", "*downsample.0"])
    assert len(names) == 55
    assert sum(t.numel() for t in lora.lora_state(backbone.encoder.trunk).values()) == 639_704


def test_rn50_projector_file_is_under_3_mb(tmp_path):
    classes = [f"class {i}" for i in range(10)]
    spec = ProjectorSpec("open_clip:RN50", None, "final", "random", 8, 8.0, "all", 16)
    projector = build_projector(spec, classes, logit_scale=10.0, seed=0)
    size = save_projector(tmp_path / "rn50.safetensors", projector, classes, artifacts.sha256_json(classes), {}, "fp16")
    _, metadata = artifacts.load_tensors(tmp_path / "rn50.safetensors")
    # 639,704 conv + 122,880 attention-pool linear LoRA numbers, the stored 10 x 1024 head, the scale
    assert metadata["stored_parameters"] == 639_704 + 122_880 + 10 * 1024 + 1
    assert size < 3_000_000


def test_offline_pretrained_tag_fails_with_a_hint(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        HelioError, match=r"cannot load pretrained weights 'openai'.*open_clip:RN50//path/to/checkpoint.pt"
    ):
        create_backbone("open_clip:RN50/openai")


def test_unknown_backbone_is_named():
    with pytest.raises(HelioError, match="projector.backbone='vit_huge' is unknown"):
        create_backbone("vit_huge")
    assert json.loads((REPO / "tests" / "fixtures" / "tiny-rn-clip.json").read_text())["embed_dim"] == 32
