import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from helio_app.cli import app
from helio_core import artifacts
from helio_core.data.shards import ShardedImages
from helio_core.data.splits import ImageSet, classes_sha256, load_split, write_split
from helio_core.errors import HelioError
from helio_core.methods.projector_fit import (
    PrefixFed,
    cached_prefix_inputs,
    fit_splits,
    pixel_inputs,
    teachers_target,
)
from helio_core.models.projector import Projector, ProjectorSpec, build_projector
from helio_core.params import load_params
from helio_core.training.losses import combine_teachers, projector_loss
from stages import fit_projector
from tests.conftest import REPO, inputs_of


def test_eq5_loss_is_mse_plus_lambda_ce_and_kl_is_temperature_scaled():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    mse = load_params(REPO / "params.yaml", ["projector.loss=mse", "projector.lambda_ce=0.5"]).projector
    expected = ((logits - target) ** 2).mean() + 0.5 * F.cross_entropy(logits, labels)
    torch.testing.assert_close(projector_loss(logits, target, labels, mse), expected)
    kl = load_params(REPO / "params.yaml", ["projector.loss=kl", "projector.temperature=2", "projector.lambda_ce=0"])
    p_target = F.softmax(target / 2, -1)
    expected_kl = 4 * (p_target * (p_target.log() - F.log_softmax(logits / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(projector_loss(logits, target, labels, kl.projector), expected_kl)


def test_teachers_target_averages_and_mirrors():
    class Column(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x):  # logit 0: mean of the left column; logit 1: constant
            return torch.stack([x[:, 0, :, 0].mean(-1) * self.scale, torch.ones(len(x))], dim=1)

    images = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    images[..., 0] = 255
    teachers = [Column(1.0), Column(3.0)]
    params = load_params(REPO / "params.yaml", ["projector.target=mean_logits"]).projector
    assert teachers_target(teachers, images, params).tolist() == [[2.0, 1.0]]
    assert teachers_target(teachers, images, params, mirrored=True).tolist() == [[0.0, 1.0]]


def test_fit_splits_read_the_split_only_as_used_and_bit_exact_to_the_drawn_images(tmp_path, monkeypatch):
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels, classes = torch.arange(40) % 2, ["a", "b"]
    metadata = {"split": "train", "classes_sha256": classes_sha256(classes)}
    write_split(tmp_path / "train", ImageSet(images, labels, classes), 4, metadata, ([0.5], [0.2]), shard_bytes=7 * 16)
    train, _ = load_split(tmp_path / "train", classes)
    distilled = ImageSet(images[:3] // 2, torch.tensor([0, 1, 0]), classes)
    reads = []
    original_rows = ShardedImages.rows
    monkeypatch.setattr(ShardedImages, "rows", lambda self, at: reads.append(len(at)) or original_rows(self, at))
    overrides = ["projector.val_images=5", "projector.train_images=20", "projector.test_images=6"]
    config = load_params(REPO / "params.yaml", [*overrides, "projector.distilled_repeats=2"]).projector
    splits = fit_splits(train, train, distilled, config, torch.Generator().manual_seed(0), tmp_path / "train")
    assert reads == []  # drawing the sets reads no image
    generator = torch.Generator().manual_seed(0)  # the draws, made again on the images in memory
    order = torch.randperm(40, generator=generator)
    test_index = torch.randperm(40, generator=generator)[:6]
    expected = torch.cat([images[order[5:25]], images[:3] // 2, images[:3] // 2])
    assert splits.fit.images.shape == (26, 1, 4, 4)
    assert torch.equal(splits.fit.labels, torch.cat([labels[order[5:25]], torch.tensor([0, 1, 0, 0, 1, 0])]))
    for index in (torch.arange(26), torch.tensor([25, 0, 19, 20, 3]), slice(18, 23)):
        assert torch.equal(splits.fit.images[index], expected[index])
    assert torch.equal(torch.cat(list(splits.fit.images.split(7))), expected)
    assert torch.equal(splits.val.images[:], images[order[:5]]) and torch.equal(
        splits.test.images[:], images[test_index]
    )
    assert torch.equal(torch.cat(list(splits.val.images.split(2))), images[order[:5]])
    assert max(reads) <= 20  # a batch at a time, never the split
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    params = load_params(REPO / "params.yaml").projector
    for mirrored in (False, True):
        streamed = teachers_target([teacher], splits.fit.images, params, mirrored=mirrored)
        assert torch.equal(streamed, teachers_target([teacher], expected, params, mirrored=mirrored))


def test_mean_probs_target_is_the_ensembles_averaged_distribution():
    logits = [torch.tensor([[4.0, 0.0, -2.0]]), torch.tensor([[-1.0, 3.0, 0.5]])]
    target = combine_teachers(logits, "mean_probs", 2.0)
    expected = (F.softmax(logits[0] / 2, -1) + F.softmax(logits[1] / 2, -1)) / 2
    torch.testing.assert_close(F.softmax(target / 2, -1), expected)
    torch.testing.assert_close(combine_teachers(logits, "mean_logits", 2.0), (logits[0] + logits[1]) / 2)


@pytest.fixture
def fitted(quick_fitted):
    return quick_fitted


def test_fit_writes_a_small_projector_whose_labels_the_cli_reproduces(fitted, workdir):
    params, metrics, workspace = fitted
    file, distilled = workspace.projector, workspace.distilled
    assert metrics["projector_bytes"] == file.stat().st_size < 3_000_000
    assert metrics["teacher_to_projector_ratio"] >= 10
    assert set(metrics["after_lora"]) == {"acc", "teacher_acc", "agreement", "mse"}
    assert len(metrics["history"]) == params.projector.epochs
    _, metadata = artifacts.load_tensors(file)
    assert metadata["teacher_epochs"] == [1, 2, 3, 4] and metadata["spec"]["head_init"] == "prototypes"
    assert metadata["provenance"]["params"]["lora"]["rank"] == 2

    projector = Projector.load(file, images_dir=distilled)
    image_file = str(distilled / "images" / "1_0.png")
    with torch.inference_mode():
        expected = projector(artifacts.read_png(image_file)[None].float() / 255)[0]
    result = CliRunner().invoke(
        app, ["label", str(file), image_file, "--images-dir", str(distilled), "-o", "labels.json"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(open("labels.json").read())["labels"][0]["logits"]
    assert written == pytest.approx(expected.tolist(), abs=1e-5)


def test_prototype_projector_without_its_images_is_refused(fitted):
    with pytest.raises(HelioError, match="head_init=prototypes needs the distilled images"):
        Projector.load(fitted[2].projector)


def test_unkept_teacher_epoch_is_refused():
    with pytest.raises(HelioError, match=r"projector.teachers lists epochs \[7\] that teachers.keep does not keep"):
        load_params(REPO / "presets" / "quick.yaml", ["projector.teachers=[1, 7]"])


def test_refine_and_evaluate_students_through_the_cli(fitted, workdir):
    inputs_of(fitted[2], workdir)
    shutil.copytree(fitted[2].projector.parent, workdir / "artifacts" / "projector")
    quick = str(REPO / "presets" / "quick.yaml")
    refined = CliRunner().invoke(app, ["refine-images", "-p", quick])
    assert refined.exit_code == 0, refined.output
    assert "agreement on the distilled images" in refined.output
    assert len(list((workdir / "artifacts/refined/images").glob("*.png"))) == 8
    modes = ["-S", "student.label_modes=[hard, projector, teachers, teacher_int4]", "-S", "student.seeds=[0]",
             "-S", "student.teacher_batchnorm=batch"]  # fmt: skip
    students = CliRunner().invoke(app, ["evaluate-students", "-p", quick, *modes])
    assert students.exit_code == 0, students.output
    table = json.loads((workdir / "metrics/students.json").read_text())
    assert set(table["resnet18"]) == {"hard", "projector", "teachers", "teacher_int4"}
    assert table["resnet18"]["hard"]["seeds"] == 1
    fit_targets = sorted((workdir / "artifacts/teachers").glob("epoch_*.safetensors"))  # quick: every kept epoch
    int4_bytes = table["resnet18"]["teacher_int4"]["extra_storage_bytes"]
    assert 0.12 < int4_bytes / fit_targets[-1].stat().st_size < 0.15  # an eighth of the fp32 teacher, with scales
    assert table["resnet18"]["teachers"]["extra_storage_bytes"] == sum(f.stat().st_size for f in fit_targets)
    assert list((workdir / "artifacts/stored_labels").iterdir()) == []  # the stage's output exists, empty
    assert (
        "projector" in students.output
        and f"{table['resnet18']['projector']['extra_storage_bytes']:,}" in students.output
    )
    # the full-data reference: the same recipe on the whole train split, its own table beside the default one,
    # from its stage's deps alone (experiments/fair/dvc.yaml: the data and the teachers)
    for output in ("distilled", "projector", "refined", "label_net"):
        shutil.rmtree(workdir / "artifacts" / output, ignore_errors=True)
    both_modes = ["-S", "full_data.label_modes=[hard, teacher]"]
    full = CliRunner().invoke(app, ["evaluate-students", "-p", quick, "--full-data", *both_modes])
    assert full.exit_code == 0, full.output
    reference = json.loads((workdir / "metrics/full_data.json").read_text())
    assert reference["ipc"] is None and reference["train_images"] == 224 and reference["epochs"] == 1
    assert set(reference["resnet18"]) == {"hard", "teacher"} and "the whole train split (224 images)" in full.output
    assert reference["label_files_sha256"] == {}  # it learned from no projector or label network
    train_files = (workdir / "artifacts/data/train").iterdir()
    assert reference["images_bytes"] == sum(path.stat().st_size for path in train_files)
    assert json.loads((workdir / "metrics/students.json").read_text()) == table
    both = CliRunner().invoke(app, ["evaluate-students", "-p", quick, "--full-data", "--arch", "resnet18"])
    assert both.exit_code == 2 and "--arch and --full-data are two different tables" in both.output


LATE_TARGETS = ["blocks.4.*", "blocks.5.*"]


def _efficientnet_projector(targets):
    spec = ProjectorSpec("efficientnet_lite0", 32, "multi", "random", 2, 2.0, targets, 0)
    torch.manual_seed(0)
    return build_projector(spec, ["a", "b", "c"], logit_scale=10.0, seed=0)


@pytest.mark.parametrize(("targets", "blocks"), [("all", 0), (LATE_TARGETS, 4), (["blocks.5.*"], 5)])
def test_prefix_fed_logits_equal_the_full_forward(targets, blocks):
    projector = _efficientnet_projector(targets).eval()
    assert projector.frozen_prefix_blocks() == blocks
    images = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        fed = PrefixFed(projector, blocks)(*projector.prefix(images, blocks))
        torch.testing.assert_close(fed, projector(images), rtol=1e-5, atol=1e-5)


def test_cached_prefix_inputs_hold_each_view_of_each_image():
    projector = _efficientnet_projector(LATE_TARGETS).eval()
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    inputs = cached_prefix_inputs(projector, images, views=2, blocks=4, batch_size=2)
    index, view = torch.tensor([3, 0, 3]), torch.tensor([0, 1, 1])
    pixels = pixel_inputs(images)(index, view)[0]
    with torch.no_grad():
        torch.testing.assert_close(PrefixFed(projector, 4)(*inputs(index, view)), projector(pixels))


def test_fit_with_the_cached_prefix_follows_the_uncached_fit(fitted, tmp_path):
    """The cache changes what is computed, not the loss: the same seed gives the same training curve."""
    histories = {}
    for cache in (True, False):
        overrides = ["projector.views=plain", f"projector.cache_prefix={str(cache).lower()}",
                     'lora.targets=["blocks.4.*","blocks.5.*"]']  # fmt: skip
        variant = load_params(REPO / "presets" / "quick.yaml", overrides)
        metrics = fit_projector.run(variant, inputs_of(fitted[2], tmp_path / f"{cache}"))
        assert metrics["cached_prefix_blocks"] == (4 if cache else 0)
        histories[cache] = [epoch["val_loss"] for epoch in metrics["history"]]
    assert histories[True] == pytest.approx(histories[False], rel=1e-3)


def test_weak_teachers_in_batch_statistics_change_the_target_and_are_recorded(fitted, tmp_path):
    """teacher_acc is the accuracy of the teachers' combined target on the test images, whatever the fit."""
    params, metrics, _ = fitted
    variant = load_params(REPO / "presets" / "quick.yaml", ["projector.teacher_batchnorm=batch", "projector.epochs=1"])
    workspace = inputs_of(fitted[2], tmp_path)
    batch = fit_projector.run(variant, workspace)
    assert batch["after_lora"]["teacher_acc"] != metrics["after_lora"]["teacher_acc"]
    _, metadata = artifacts.load_tensors(workspace.projector)
    assert metadata["provenance"]["params"]["projector"]["teacher_batchnorm"] == "batch"
