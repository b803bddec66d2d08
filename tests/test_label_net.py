"""The label network (label mode `label_net`): its file round-trips bit-exact in every storage dtype and refuses
files of another kind, its distillation moves it towards its target, and its stage feeds the students."""

import json
import math
import shutil
from functools import partial

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from helio_app.cli import app
from helio_core import artifacts
from helio_core.data.splits import classes_sha256, load_classes, load_split
from helio_core.errors import HelioError
from helio_core.methods.label_net_fit import distil, label_fidelity
from helio_core.models.checkpoints import load_teacher
from helio_core.models.label_net import LabelNet, LabelNetSpec, load_label_net, save_label_net, shipped
from helio_core.models.projector import load_projector
from helio_core.params import load_params
from helio_core.progress import SILENT
from helio_core.runtime import CPU
from helio_core.training.labels import joined_views, labelled_views
from helio_core.training.losses import combine_teachers, distillation_kl
from stages import fit_label_net
from tests.conftest import REPO, inputs_of, write_tiny_clip_projector

CLASSES = ["a", "b", "c"]


def _net(seed: int = 0, arch: str = "convnet") -> LabelNet:
    torch.manual_seed(seed)
    widths = (4, 8) if arch == "convnet" else (4, 6, 8, 8)
    net = LabelNet(LabelNetSpec(arch, widths, 3, len(CLASSES)), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so that they must round-trip too
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("arch", ["convnet", "resnet18"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_the_file_gives_back_exactly_the_network_the_fit_measured(tmp_path, dtype, arch):
    net, images = _net(arch=arch), torch.rand(6, 3, 12, 12)
    path = tmp_path / "label_net.safetensors"
    size = save_label_net(path, net, CLASSES, classes_sha256(CLASSES), {"note": "x"}, dtype)
    loaded, metadata = load_label_net(path, classes_sha256(CLASSES))
    assert size == path.stat().st_size and metadata["dtype"] == dtype and metadata["note"] == "x"
    with torch.no_grad():
        assert torch.equal(loaded(images), shipped(net, dtype)(images))  # what the stage measures is what ships
        if dtype == "fp32":
            assert torch.equal(loaded(images), net(images))
        else:  # rounded, not broken: int8 keeps the logits within a few percent of their spread
            error = (loaded(images) - net(images)).abs().max() / net(images).std()
            assert 0 < error < (0.1 if dtype == "int8" else 0.01)
    again = tmp_path / "again.safetensors"
    save_label_net(again, loaded, CLASSES, classes_sha256(CLASSES), {"note": "x"}, dtype)
    first, second = load_file(str(path)), load_file(str(again))
    exact = [name for name in first if not name.endswith(".int8_scale")]  # a scale may move by one ulp
    assert all(torch.equal(first[name], second[name]) for name in exact) and first.keys() == second.keys()
    stored = {name: tensor.dtype for name, tensor in first.items()}
    expected = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8}[dtype]
    assert stored["body.0.weight"] == expected and stored["mean"] == torch.float32


def test_int8_and_fp16_files_are_smaller_than_fp32(tmp_path):
    net = LabelNet(LabelNetSpec("convnet", (16, 32), 3, 10), [0.5] * 3, [0.25] * 3)
    sizes = {
        dtype: save_label_net(tmp_path / f"{dtype}.safetensors", net, list("abcdefghij"), "h", {}, dtype)
        for dtype in ("fp32", "fp16", "int8")
    }
    assert sizes["int8"] < 0.6 * sizes["fp16"] < 0.6 * sizes["fp32"]


def test_a_label_net_file_and_a_projector_file_refuse_each_other(tmp_path):
    label_net = tmp_path / "label_net.safetensors"
    save_label_net(label_net, _net(), CLASSES, classes_sha256(CLASSES), {}, "fp16")
    with pytest.raises(HelioError, match=r"label_net.safetensors: not a projector file \(kind='label-net'\)"):
        load_projector(label_net)
    projector = write_tiny_clip_projector(tmp_path, tmp_path / "projector.safetensors", CLASSES)
    with pytest.raises(HelioError, match=r"projector.safetensors: not a label-net file \(kind='projector'\)"):
        load_label_net(projector)


def test_a_damaged_or_foreign_label_net_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "label_net.safetensors"
    save_label_net(path, _net(), CLASSES, classes_sha256(CLASSES), {}, "int8")
    with pytest.raises(HelioError, match=r"label_net.safetensors: made for another class list"):
        load_label_net(path, classes_sha256(["x", "y", "z"]))
    tensors, metadata = artifacts.load_tensors(path)
    cases = {
        "spec": ({**metadata, "spec": {**metadata["spec"], "widths": []}}, tensors, "spec must hold an arch"),
        "arch": ({**metadata, "spec": {**metadata["spec"], "arch": "resnet18"}}, tensors, "four for resnet18"),
        "classes": ({**metadata, "classes": ["a", "b", "d"]}, tensors, "class list does not match"),
        "scale": (metadata, {k: v for k, v in tensors.items() if k != "body.0.weight.int8_scale"}, "no .int8_scale"),
        "shape": (metadata, {**tensors, "head.bias": torch.zeros(5, dtype=torch.float16)}, "weights do not fit"),
        "missing": (metadata, {k: v for k, v in tensors.items() if k != "head.bias"}, r"or extra \['head.bias'\]"),
    }  # fmt: skip
    for name, (record, stored, message) in cases.items():
        broken = tmp_path / f"{name}.safetensors"
        artifacts.save_tensors(broken, stored, record)
        with pytest.raises(HelioError, match=rf"{name}.safetensors: .*{message}"):
            load_label_net(broken)
    with pytest.raises(HelioError, match="label-net dtype must be one of fp32, fp16, int8"):
        save_label_net(tmp_path / "x.safetensors", _net(), CLASSES, "h", {}, "bf16")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(HelioError, match="plain.safetensors: not a helio safetensors file"):
        load_label_net(tmp_path / "plain.safetensors")


def test_the_resnet18_label_net_is_the_teachers_layout_made_narrow():
    """At the teacher's widths it has the teacher's every tensor, in order, so narrowing is its only change; a
    28-px image reaches its last stage as 1x1, as in the teacher."""
    teacher = torchvision.models.resnet18(weights=None, num_classes=10)
    teacher.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    full = LabelNet(LabelNetSpec("resnet18", (64, 128, 256, 512), 1, 10), [0.5], [0.25])
    shapes = lambda net: [tuple(t.shape) for name, t in net.state_dict().items() if name not in ("mean", "std")]  # noqa: E731
    assert shapes(full) == shapes(teacher)
    narrow = LabelNet(LabelNetSpec("resnet18", (16, 32, 64, 128), 1, 10), [0.5], [0.25]).eval()
    assert narrow.body(torch.rand(2, 1, 28, 28)).shape == (2, 128, 1, 1)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in teacher.parameters()) / 15
    with pytest.raises(HelioError, match=r"label_net.widths must list 4 stage widths for arch resnet18"):
        load_params(REPO / "presets" / "quick.yaml", ["label_net.widths=[8, 16]"])


def test_distillation_moves_the_network_towards_its_teacher():
    """A fixed random network as the teacher, student-style views of random images: the label network's KL to it on
    held-out images falls, and the fidelity it reports is the KL computed directly."""
    params = load_params(REPO / "presets" / "quick.yaml", ["label_net.epochs=6", "label_net.lr=0.01"])
    teacher = _net(seed=1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=generator)
    labels = torch.arange(64) % 3
    held_images = torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8, generator=generator)
    with torch.no_grad():
        held_targets = teacher(held_images.float() / 255)
    held_out = (held_images, held_targets, torch.arange(32) % 3)
    net = _net(seed=2).train()
    before = label_fidelity(net, held_out, 4.0, CPU)
    only = lambda logits: logits[0]  # noqa: E731
    batches = labelled_views(images, labels, [teacher], 3, params.student, [0.5, 1.0], 16, only, CPU)
    history = distil(net, batches, 4, held_out, params.label_net, generator, CPU, SILENT)
    assert [row["epoch"] for row in history] == list(range(1, 7))
    assert history[-1]["kl"] < 0.5 * before["kl"]
    with torch.no_grad():
        direct = distillation_kl(net.eval()(held_images.float() / 255), held_targets, 4.0).item()
    assert history[-1]["kl"] == pytest.approx(direct, abs=1e-5)


def test_lambda_ce_pulls_the_network_towards_the_true_labels_where_the_teacher_disagrees():
    """Labels the random teacher does not know: with the cross-entropy term the network fits them on its own train
    images better than on the teacher's labels alone, and further from the teacher."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 3, 12, 12), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (48,), generator=generator)
    teacher = _net(seed=1)
    with torch.no_grad():
        targets = teacher(images.float() / 255)
    only = lambda logits: logits[0]  # noqa: E731
    fitted = {}
    for weight in (0.0, 5.0):
        overrides = ["label_net.epochs=16", "label_net.lr=0.01", f"label_net.lambda_ce={weight}"]
        overrides.append("student.cutmix=false")
        params = load_params(REPO / "presets" / "quick.yaml", overrides)
        batches = labelled_views(images, labels, [teacher], 3, params.student, [0.9, 1.0], 16, only, CPU)
        net = _net(seed=2).train()
        distil(net, batches, 3, (images, targets, labels), params.label_net, torch.Generator().manual_seed(1), CPU,
               SILENT)  # fmt: skip
        fitted[weight] = label_fidelity(net, (images, targets, labels), 4.0, CPU)
    assert fitted[5.0]["acc"] > fitted[0.0]["acc"] + 0.1
    assert fitted[5.0]["kl"] > 3 * fitted[0.0]["kl"]


def test_unkept_label_net_teacher_is_refused():
    with pytest.raises(HelioError, match=r"label_net.teachers lists epochs \[7\] that teachers.keep does not keep"):
        load_params(REPO / "presets" / "quick.yaml", ["label_net.teachers=[2, 7]"])
    with pytest.raises(HelioError, match="label_net.teachers must be"):
        load_params(REPO / "presets" / "quick.yaml", ["label_net.teachers=first"])
    for share in ("0.01", "0.99"):  # quick's batch of 16: no refined view, or no train view
        with pytest.raises(HelioError, match=rf"label_net.stream_share={share} of batch_size=16 must leave"):
            load_params(REPO / "presets" / "quick.yaml", [f"label_net.stream_share={share}"])


def test_the_stage_writes_the_file_and_its_fidelity(quick_fitted, tmp_path):
    """fit_label_net on the quick preset (which, as params.yaml, practises on the refined images: here the distilled
    ones stand in), from the full teacher and from two weak teachers' mean (the students' side, label mode
    label_net, runs end to end in tests/test_pipeline_e2e.py)."""
    workspace = inputs_of(quick_fitted[2], tmp_path)
    shutil.copytree(workspace.distilled, workspace.refined)
    params = load_params(REPO / "presets" / "quick.yaml")  # int8, as params.yaml
    metrics = fit_label_net.run(params, workspace)
    assert metrics["dtype"] == "int8" and metrics["label_net_bytes"] == workspace.label_net.stat().st_size
    record = artifacts.read_metadata(workspace.label_net)
    assert record["teacher_epochs"] == [4] and "refined" in record["provenance"]["inputs"]  # last: the full teacher
    written = json.loads(workspace.label_net_metrics.read_text())
    assert written["shipped"]["kl"] >= 0 and len(written["history"]) == params.label_net.epochs
    assert any("label network" in line for line in fit_label_net.summary(metrics))
    weak_fp16 = load_params(REPO / "presets" / "quick.yaml", ["label_net.teachers=[1, 3]", "label_net.dtype=fp16"])
    weak = fit_label_net.run(weak_fp16, workspace)
    assert artifacts.read_metadata(workspace.label_net)["teacher_epochs"] == [1, 3] and weak["dtype"] == "fp16"
    assert not list(workspace.label_net.parent.parent.glob(".label_net.*"))  # nothing half-written left beside it


def test_joined_views_append_the_extra_views_and_restart_them_when_they_run_out():
    epochs_started = []

    def numbered(value: float, batches: int, size: int):
        def epoch(generator: torch.Generator):
            epochs_started.append(value)
            fresh = torch.randint(0, 1000, (1,), generator=generator).item()  # a new draw of views every epoch
            for index in range(batches):
                hard = torch.zeros(size, 3)
                yield (torch.full((size, 1, 2, 2), value),), torch.full((size, 3), float(fresh + index)), hard

        return epoch

    joined = list(joined_views(numbered(0.0, 5, 4), numbered(1.0, 2, 2))(torch.Generator().manual_seed(0)))
    assert len(joined) == 5 and epochs_started == [0.0, 1.0, 1.0, 1.0]  # the main pass sets the epoch's length
    for (views,), target, hard in joined:
        assert views.shape == (6, 1, 2, 2) and target.shape == (6, 3) and hard.shape == (6, 3)
        assert views[:4].eq(0).all() and views[4:].eq(1).all()
    extra_targets = [target[4, 0].item() for _, target, _ in joined]
    assert extra_targets[1] == extra_targets[0] + 1 and extra_targets[2] != extra_targets[0]  # restarted afresh


def test_a_stream_share_of_each_batch_is_views_of_the_refined_images(quick_fitted, tmp_path):
    """With label_net.stream_share, that share of every batch is the students' views of the refined images (here
    all black, so they are told apart from train views), and the file records the refined images it practised on."""
    workspace = inputs_of(quick_fitted[2], tmp_path)
    shutil.copytree(workspace.distilled, workspace.refined)
    for png in (workspace.refined / "images").glob("*.png"):
        artifacts.write_png(png, torch.zeros_like(artifacts.read_png(png)))
    params = load_params(REPO / "presets" / "quick.yaml", ["label_net.stream_share=0.25"])
    classes, class_hash = load_classes(workspace.classes)
    train = load_split(workspace.split("train"), classes)[0]
    teacher = load_teacher(workspace.last_teacher(), class_hash, "cpu")[0]
    combine = partial(combine_teachers, target="mean_logits", temperature=4.0)
    batches, steps = fit_label_net._fit_views(params, workspace, train, [teacher], class_hash, combine, CPU)
    epoch = list(batches(torch.Generator().manual_seed(0)))
    assert len(epoch) == steps == math.ceil(len(train.labels) / 12)  # 12 train views and 4 refined ones a batch
    for (views,), target, _ in epoch[:-1]:
        assert len(views) == len(target) == 16
        assert views[12:].eq(0).all() and views[:12].flatten(1).amax(1).gt(0).all()
    fit_label_net.run(params, workspace)
    assert "refined" in artifacts.read_metadata(workspace.label_net)["provenance"]["inputs"]


def test_helio_label_reads_a_label_net_file(tmp_path, monkeypatch):
    path = tmp_path / "label_net.safetensors"
    save_label_net(path, _net(), CLASSES, classes_sha256(CLASSES), {}, "fp16")
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    artifacts.write_png(tmp_path / "x.png", image)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["label", str(path), "x.png", "-o", "labels.json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "labels.json").read_text())
    with torch.no_grad():
        expected = load_label_net(path)[0](image[None].float() / 255)[0]
    assert written["classes"] == CLASSES and written["labels"][0]["top"] == CLASSES[int(expected.argmax())]
    assert written["labels"][0]["logits"] == pytest.approx(expected.tolist(), abs=1e-5)
