import pytest
import torch
from torch import nn

from helio_core.data.distilled import load_distilled
from helio_core.data.splits import load_classes, load_split
from helio_core.errors import HelioError
from helio_core.methods.selection import distill_class, select_lowest_ce, tile
from helio_core.params import load_params
from helio_core.workspace import Workspace
from stages import prepare, select_patches, train_teachers
from tests.conftest import REPO, inputs_of


class BrightnessObserver(nn.Module):
    """Class 0 logit grows with mean brightness, class 1 logit shrinks: bright crops are easy class 0."""

    def forward(self, images):
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([8 * (brightness - 0.5), -8 * (brightness - 0.5)], dim=1)


def test_select_lowest_ce_takes_best_crop_then_lowest_images():
    losses = torch.tensor(
        [
            [0.9, 0.4, 0.7],  # image 0: best crop 1 (0.4)
            [0.2, 0.8, 0.3],  # image 1: best crop 0 (0.2)
            [1.5, 1.1, 1.2],  # image 2: best crop 1 (1.1)
            [0.6, 0.5, 0.05],  # image 3: best crop 2 (0.05)
        ]
    )
    images, crops = select_lowest_ce(losses, 3)
    assert images.tolist() == [3, 1, 0] and crops.tolist() == [2, 0, 1]


def test_distill_class_picks_the_crops_the_observer_finds_easiest():
    torch.manual_seed(0)
    levels = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.5, 0.8, 0.2])
    images = (levels.view(-1, 1, 1, 1) * 255).round().to(torch.uint8).expand(-1, 1, 8, 8).contiguous()
    params = load_params(
        REPO / "params.yaml", ["select.ipc=3", "select.candidates=7", "select.crops=1", "select.crop_scale=[1.0, 1.0]"]
    )
    distilled, losses = distill_class(BrightnessObserver(), images, 0, params.select)
    assert distilled.shape == (3, 1, 8, 8)
    assert [round(v, 2) for v in (distilled[:, 0, 0, 0].float() / 255).tolist()] == [0.9, 0.8, 0.7]
    assert losses.shape == (3, 1) and losses[:, 0].tolist() == sorted(losses[:, 0].tolist())
    dark, _ = distill_class(BrightnessObserver(), images, 1, params.select)
    assert [round(v, 2) for v in (dark[:, 0, 0, 0].float() / 255).tolist()] == [0.1, 0.2, 0.3]


def test_distill_class_prefers_the_bright_half_of_split_images():
    torch.manual_seed(0)
    images = torch.zeros(6, 1, 16, 16, dtype=torch.uint8)
    images[:, :, :, :8] = 255  # left half white, right half black
    params = load_params(
        REPO / "params.yaml",
        ["select.ipc=2", "select.candidates=6", "select.crops=8", "select.crop_scale=[0.25, 0.25]"],
    )
    distilled, _ = distill_class(BrightnessObserver(), images, 0, params.select)
    assert (distilled.float().mean(dim=(1, 2, 3)) > 0.6 * 255).all()


def test_tile_follows_rdeds_order():
    ipc, factor = 3, 2
    patches = torch.arange(ipc * factor**2).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    images = tile(patches, ipc, factor)
    assert images.shape == (3, 1, 8, 8)
    for i in range(ipc):
        for row in range(factor):
            for col in range(factor):
                cell = images[i, 0, row * 4 : (row + 1) * 4, col * 4 : (col + 1) * 4]
                assert (cell == i + (row * factor + col) * ipc).all()
    assert torch.equal(tile(patches[:3], 3, 1), patches[:3])


def test_ipc_larger_than_a_class_fails_cleanly(workdir, quick_params):
    workspace = Workspace()
    prepare.run(quick_params, workspace)
    train_teachers.run(
        load_params(REPO / "presets" / "quick.yaml", ["teachers.epochs=1", "teachers.keep=[1]"]), workspace
    )
    too_many = load_params(REPO / "presets" / "quick.yaml", ["select.ipc=20", "select.candidates=100"])
    with pytest.raises(
        HelioError, match=r"select.ipc=20 needs 80 images of class 'class_0'; .*artifacts/data/train holds \d+"
    ):
        select_patches.run(too_many, workspace)
    assert not workspace.distilled.exists() and not workspace.distilled_grid.exists()


def _numbered(count: int, side: int) -> torch.Tensor:
    """`count` flat grey images, image i of value 10 * i + 5: any patch of it names it."""
    values = torch.arange(count) * 10 + 5
    return values.view(-1, 1, 1, 1).expand(-1, 1, side, side).to(torch.uint8).contiguous()


def test_random_method_takes_distinct_whole_images_stable_for_a_seed():
    images = _numbered(20, 8)
    params = load_params(REPO / "params.yaml", ["select.method=random", "select.ipc=4", "select.candidates=1"])

    def drawn(seed: int, factor: int = 1) -> tuple[list[int], torch.Tensor]:
        torch.manual_seed(seed)
        select = params.select.model_copy(update={"factor": factor})
        distilled, losses = distill_class(BrightnessObserver(), images, 0, select)
        cells = distilled.unfold(2, 8 // factor, 8 // factor).unfold(3, 8 // factor, 8 // factor)
        assert (cells == cells[..., :1, :1]).all()  # every cell one whole image, shrunk
        return [(int(v) - 5) // 10 for v in cells[:, 0, :, :, 0, 0].flatten()], losses

    picked, losses = drawn(0)
    assert len(picked) == 4 == len(set(picked)) and all(0 <= i < 20 for i in picked)
    assert losses.shape == (4, 1) and picked != sorted(picked, reverse=True)  # drawn, not ranked by the observer
    assert drawn(0)[0] == picked and drawn(1)[0] != picked
    tiled, tiled_losses = drawn(0, factor=2)
    assert len(tiled) == 16 == len(set(tiled)) and tiled_losses.shape == (4, 4)


def test_random_method_needs_no_candidates_and_rded_does():
    assert load_params(REPO / "params.yaml", ["select.method=random", "select.candidates=1"]).select.method == "random"
    with pytest.raises(HelioError, match="select.candidates=1 must be at least ipc"):
        load_params(REPO / "params.yaml", ["select.candidates=1"])


def test_the_stage_with_random_method_writes_train_images_of_each_class(quick_fitted, tmp_path, monkeypatch):
    """Through the stage (quick data, factor 1): each distilled image is a train image of its own class, unchanged,
    and no image is taken twice."""
    _, _, fitted = quick_fitted
    monkeypatch.chdir(tmp_path)
    workspace = inputs_of(fitted, tmp_path)
    params = load_params(REPO / "presets" / "quick.yaml", ["select.method=random", "select.factor=1"])
    metrics = select_patches.run(params, workspace)
    classes, class_hash = load_classes(workspace.classes)
    train, _ = load_split(workspace.split("train"), classes)
    images, labels = load_distilled(workspace.distilled, class_hash)
    assert metrics["images"] == len(classes) * params.select.ipc == len(labels)
    found = []
    for image, label in zip(images, labels, strict=True):
        same = (train.images[:] == image).flatten(1).all(dim=1).nonzero().flatten().tolist()
        assert same and all(train.labels[i] == label for i in same)
        found.append(same[0])
    assert len(set(found)) == len(found)
