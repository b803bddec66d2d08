"""Every preset is a complete, valid params file, and each paper preset's `prepare` runs on a tiny stand-in of
its data source (an ImageFolder tree, CIFAR python batches) with small caps."""

import dataclasses
import pickle

import numpy as np
import open_clip
import pytest
import yaml
from PIL import Image
from torch import nn

from helio_core.data import DataPaths, load_classes, load_split, run_prepare
from helio_core.lora import adaptable_layers
from helio_core.params import Params, load_params
from tests.conftest import REPO

PRESETS = sorted((REPO / "presets").glob("*.yaml"))
IMAGEFOLDER_PRESETS = ["imagenet1k", "imagenet100", "places365"]
CIFAR_PRESETS = {  # batch files, meta file, its class-names key, the batches' labels key
    "cifar10": ([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], "batches.meta", "label_names", "labels"),
    "cifar100": (["train", "test"], "meta", "fine_label_names", "fine_labels"),
}
SMALL = ["data.train_per_class=3", "data.test_per_class=2", "data.val_images=2"]


def test_the_paper_presets_are_there():
    assert {path.stem for path in PRESETS} >= {*IMAGEFOLDER_PRESETS, *CIFAR_PRESETS, "quick"}


@pytest.mark.parametrize("name", [*IMAGEFOLDER_PRESETS, *CIFAR_PRESETS])
def test_paper_preset_sets_every_key(name):
    """Complete files: no knob silently falls back to a default tuned for Fashion-MNIST on 2 cores (every preset
    also validates: test_params.py)."""
    raw = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    defaults = Params()
    assert set(raw) == {field.name for field in dataclasses.fields(defaults)}
    for section, value in raw.items():
        if isinstance(value, dict):
            keys = {field.name for field in dataclasses.fields(getattr(defaults, section))}
            if name not in IMAGEFOLDER_PRESETS:
                keys -= {"class_names"}  # data.name=imagefolder only
            assert set(value) == keys - {"synthetic_classes", "synthetic_channels"}, section  # data.name=synthetic only


def test_paper_presets_adapt_exactly_the_convolutions_of_clip_rn50():
    """The paper puts LoRA on "the convolution layer[s] in the image encoder", not on the attention pool."""
    visual = open_clip.create_model("RN50", pretrained=None).visual
    convolutions = [name for name, module in visual.named_modules() if isinstance(module, nn.Conv2d)]
    for name in [*IMAGEFOLDER_PRESETS, *CIFAR_PRESETS]:
        params = load_params(REPO / "presets" / f"{name}.yaml")
        assert params.projector.backbone == "open_clip:RN50/openai"
        assert [layer for layer, _ in adaptable_layers(visual, params.lora.targets)] == convolutions


def _imagefolder(root, classes=("goldfish", "tench")):
    """train/ and val/ class folders of small PNG and JPEG files of varied sizes."""
    for split, count in (("train", 4), ("val", 2)):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                image = Image.new("RGB", (20 + 3 * k, 14 + k), color=(index * 120, k * 50, 30))
                image.save(folder / f"{k}.{'png' if k % 2 else 'jpg'}")
    return root


@pytest.mark.parametrize("name", IMAGEFOLDER_PRESETS)
def test_imagefolder_preset_prepares_a_tiny_image_folder(tmp_path, name):
    root = _imagefolder(tmp_path / "images")
    params = load_params(REPO / "presets" / f"{name}.yaml", [f"data.root={root}", *SMALL])
    paths = DataPaths(tmp_path / "data")
    summary = run_prepare(params, paths)
    assert summary["classes"] == 2 and (summary["train"], summary["val"], summary["test"]) == (4, 2, 4)
    assert tuple(summary["shape"]) == (3, 224, 224)
    classes, class_hash = load_classes(paths.classes)
    test, _ = load_split(paths.test, class_hash)
    assert classes == ["goldfish", "tench"] and test.labels.tolist() == [0, 0, 1, 1]


def _cifar_batches(root, files, meta_file, names_key, labels_key, classes):
    """Python batches as the CIFAR distributions hold them (dicts of a uint8 array and lists), 9 images each."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for file in files:
        labels = [index % len(classes) for index in range(9)]
        batch = {"data": rng.integers(0, 256, (9, 3072), dtype=np.uint8), labels_key: labels}
        (root / file).write_bytes(pickle.dumps(batch))
    (root / meta_file).write_bytes(pickle.dumps({names_key: classes}))
    return root


@pytest.mark.parametrize("name", CIFAR_PRESETS)
def test_cifar_preset_prepares_tiny_python_batches(tmp_path, name):
    root = _cifar_batches(tmp_path / name, *CIFAR_PRESETS[name], ["apple", "bee", "cloud"])
    params = load_params(REPO / "presets" / f"{name}.yaml", [f"data.root={root}", *SMALL])
    paths = DataPaths(tmp_path / "data")
    summary = run_prepare(params, paths)
    assert summary["classes"] == 3 and (summary["train"], summary["val"], summary["test"]) == (7, 2, 6)
    assert tuple(summary["shape"]) == (3, 32, 32)
    assert load_classes(paths.classes)[0] == ["apple", "bee", "cloud"]
