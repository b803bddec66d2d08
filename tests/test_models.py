import math
import typing

import pytest
import torch
from torch import nn

from helio_core.data.splits import ImageSet
from helio_core.errors import HelioError
from helio_core.models import architectures as models
from helio_core.models.checkpoints import load_checkpoint, save_checkpoint
from helio_core.params import Arch, load_params
from helio_core.runtime import CPU
from helio_core.training.students import make_plan, new_student, train_student
from tests.conftest import REPO


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
    save_checkpoint(tmp_path / "m.safetensors", model, spec, {"epoch": 3})
    loaded, metadata = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.rand(3, 3, 16, 16)
    assert metadata["epoch"] == 3 and torch.equal(loaded(x), model(x))


STUDENT_ARCHS = ["shufflenet_v2", "mobilenet_v2", "efficientnet_b0", "swin_v2_t", "vgg11"]  # paper Table 2
# (module whose output is the last stage, its height axis) and that grid's size at 28, 32 and 224 px
LAST_STAGE = {
    "shufflenet_v2": ("stage4", -1, {28: 4, 32: 4, 224: 7}),
    "mobilenet_v2": ("features", -1, {28: 4, 32: 4, 224: 7}),
    "efficientnet_b0": ("features", -1, {28: 4, 32: 4, 224: 7}),
    "swin_v2_t": ("features", 1, {28: 2, 32: 2, 224: 7}),  # channels last: (N, H, W, C)
    "vgg11": ("features", -1, {28: 3, 32: 4, 224: 7}),
}


def _last_stage_sizes(model: models.ImageClassifier, arch: str) -> list[int]:
    name, axis, _ = LAST_STAGE[arch]
    seen = []
    getattr(model.net, name).register_forward_hook(lambda module, inputs, output: seen.append(output.shape[axis]))
    return seen


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_student_arch_trains_a_step_on_28_px_grey_images(arch):
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0])
    model = new_student(arch, 3, images, [0.5], [0.25], seed=0, device=CPU.device)
    seen = _last_stage_sizes(model, arch)
    overrides = ["student.epochs=1", "student.batch_size=4", "student.eval_every=1"]
    params = load_params(REPO / "params.yaml", overrides).student
    plan = make_plan(4, 28, params, [0.5, 1.0], seed=0)
    data = ImageSet(images, labels, ["a", "b", "c"])
    curve = train_student(model, "hard", data, plan, None, params, lambda m: 0.0, CPU)
    assert seen == [LAST_STAGE[arch][2][28]] and math.isfinite(curve[0][1])


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
@pytest.mark.parametrize("size", [32, 224])
def test_student_arch_keeps_a_last_stage_grid_at_32_and_224_px(arch, size):
    model = models.create_model(arch, 3, 3, size, [0.5] * 3, [0.25] * 3).eval()
    seen = _last_stage_sizes(model, arch)
    with torch.inference_mode():
        assert model(torch.rand(1, 3, size, size)).shape == (1, 3)
    assert seen == [LAST_STAGE[arch][2][size]]


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_student_arch_checkpoint_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    model = models.create_model(arch, 5, 1, 28, [0.3], [0.2]).eval()
    spec = {"arch": arch, "num_classes": 5, "in_channels": 1, "image_size": 28}
    save_checkpoint(tmp_path / "m.safetensors", model, spec, {})
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_low_resolution_variants_switch_at_low_res_max():
    small = models.create_model("shufflenet_v2", 10, 3, models.LOW_RES_MAX, [0.5] * 3, [0.2] * 3).net
    large = models.create_model("shufflenet_v2", 10, 3, models.LOW_RES_MAX + 1, [0.5] * 3, [0.2] * 3).net
    assert isinstance(small.maxpool, nn.Identity) and small.conv1[0].stride == (1, 1)
    assert isinstance(large.maxpool, nn.MaxPool2d) and large.conv1[0].stride == (2, 2)


def test_batch_statistics_normalises_each_batch_by_its_own_statistics_and_changes_nothing():
    torch.manual_seed(0)
    model = models.create_model("resnet18", 4, 1, 28, [0.5], [0.25]).eval()
    batch = torch.rand(6, 1, 28, 28)
    running = model(batch)
    models.batch_statistics(model).eval()
    in_batch = model(batch)
    assert not torch.allclose(running, in_batch, atol=1e-3)
    torch.testing.assert_close(model(batch), in_batch)  # nothing tracked: the same batch, the same logits
    # each view's logits depend on the batch it is labelled in
    assert not torch.allclose(model(torch.cat([batch[:3], torch.zeros(3, 1, 28, 28)]))[:3], in_batch[:3], atol=1e-3)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.running_mean is None and not m.track_running_stats for m in norms)


def test_params_name_exactly_the_registered_architectures():
    """params.py lists the architectures without importing torchvision; the registry is what builds them."""
    assert sorted(typing.get_args(Arch)) == models.list_models()


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_convnet3_is_the_distillation_literatures_student(channels, size):
    """DC/DSA/MTT's ConvNet-3: three conv-instance-norm-ReLU-avg-pool blocks of 128 channels and one linear layer on
    a 4x4 map, whether the input is 28 px grey (first conv padded by 3) or 32 px colour."""
    model = models.create_model("convnet3", 10, channels, size, [0.5] * channels, [0.25] * channels)
    convs = [m for m in model.net if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.net if isinstance(m, nn.GroupNorm)]
    assert [c.out_channels for c in convs] == [128] * 3 and [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert convs[0].padding == ((3, 3) if channels == 1 else (1, 1)) and convs[1].padding == (1, 1)
    assert [(n.num_groups, n.num_channels, n.affine) for n in norms] == [(128, 128, True)] * 3
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.net) == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.net[-1].in_features == 128 * 4 * 4
    assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_convnet3_trains_a_step_and_refuses_inputs_too_small():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    model = new_student("convnet3", 3, images, [0.5], [0.25], seed=0, device=CPU.device)
    params = load_params(REPO / "params.yaml", ["student.epochs=1", "student.batch_size=4"]).student
    plan = make_plan(4, 28, params, [0.5, 1.0], seed=0)
    data = ImageSet(images, torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    curve = train_student(model, "hard", data, plan, None, params, lambda m: 0.0, CPU)
    assert math.isfinite(curve[0][1])
    with pytest.raises(HelioError, match="convnet3 needs inputs of at least 8 px, got 4"):
        models.create_model("convnet3", 10, 3, 4, [0.5] * 3, [0.25] * 3)
