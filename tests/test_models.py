import pytest
import torch
from torch import nn

from helio_core import models
from helio_core.errors import HelioError


def test_cifar_resnet18_has_cifar_stem_and_keeps_resolution():
    model = models.create_model("resnet18_cifar", 10, 1, 32, [0.5], [0.25])
    net = model.net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.in_channels == 1
    assert isinstance(net.maxpool, nn.Identity)
    x = torch.rand(2, 1, 32, 32)
    stem = net.relu(net.bn1(net.conv1((x - 0.5) / 0.25)))
    assert net.layer1(stem).shape == (2, 64, 32, 32)
    assert net.layer4(net.layer3(net.layer2(net.layer1(stem)))).shape == (2, 512, 4, 4)
    assert model(x).shape == (2, 10)


def test_resnet18_keeps_imagenet_stem_at_any_resolution():
    net = models.create_model("resnet18", 100, 3, 224, [0.4] * 3, [0.2] * 3).net
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    small = models.create_model("resnet18", 10, 1, 28, [0.4], [0.2])
    assert small.net.conv1.stride == (2, 2) and small.net.conv1.in_channels == 1
    assert small(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_architecture_is_named():
    with pytest.raises(HelioError, match="unknown architecture 'resnet19'.*resnet18"):
        models.create_model("resnet19", 10, 3, 32, [0.5] * 3, [0.2] * 3)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = models.create_model("resnet18", 4, 3, 16, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]).eval()
    spec = {"arch": "resnet18", "num_classes": 4, "in_channels": 3, "image_size": 16}
    models.save_checkpoint(tmp_path / "m.safetensors", model, spec, {"epoch": 3})
    loaded, metadata = models.load_checkpoint(tmp_path / "m.safetensors")
    x = torch.rand(3, 3, 16, 16)
    assert metadata["epoch"] == 3 and torch.equal(loaded(x), model(x))
