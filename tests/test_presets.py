"""Every preset is a complete, valid params file, and each paper preset's `prepare` runs on a tiny stand-in of
its data source (an ImageFolder tree, CIFAR python batches) with small caps."""

import pickle

import numpy as np
import open_clip
import pytest
import yaml
from PIL import Image
from pydantic import BaseModel
from torch import nn

from helio_core.data.splits import load_classes, load_split
from helio_core.models.lora import adaptable_layers
from helio_core.params import Params, load_params
from helio_core.workspace import Workspace
from stages import prepare
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


# the keys in which the quick preset may differ from params.yaml: the data source and what makes the run small
# and fast (sizes, counts, epochs, batches, the short trajectory's learning rate and teacher window). Everything
# else is the shipped method, which the end-to-end, rerun and distributed tests must exercise.
QUICK_SIZE_KEYS = {
    "data": {"name", "size", "train_per_class", "test_per_class", "val_images", "synthetic_classes"},
    "teachers": {"epochs", "epoch_images", "keep", "batch_size", "lr", "eval_images"},
    "select": {"ipc", "factor", "candidates", "crops", "batch_size"},
    "projector": {"resolution", "teachers", "train_images", "val_images", "test_images", "epochs", "batch_size"},
    "lora": {"rank", "head_rank"},
    "label_net": {"widths", "eval_images", "epochs", "batch_size"},
    "refine": {"steps", "batch_size"},
    "student": {"seeds", "epochs", "batch_size", "eval_every", "curve_images"},
    "continual": {"steps"},
    "cross_arch": {"archs", "seeds", "lr"},
    "full_data": {"archs", "epochs", "batch_size"},
}


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every section model inside it."""
    inner = [field.annotation for field in model.model_fields.values()]
    return [
        model,
        *[m for kind in inner if isinstance(kind, type) and issubclass(kind, BaseModel) for m in _sections(kind)],
    ]


def test_no_params_model_has_a_default_in_code():
    """params.yaml (or a complete preset) is the only source of values: a default in code could disagree with it."""
    defaults = [f"{model.__name__}.{name}" for model in _sections(Params) for name, field in model.model_fields.items()
                if not field.is_required()]  # fmt: skip
    assert defaults == []


def _keys(raw: dict, prefix: str = "") -> set[str]:
    """Every dotted key of a params mapping (cross_arch.lr is one key: a mapping of values, not a section)."""
    keys = set()
    for name, value in raw.items():
        section = isinstance(value, dict) and name != "lr"
        keys |= _keys(value, f"{prefix}{name}.") if section else {f"{prefix}{name}"}
    return keys


@pytest.mark.parametrize("path", [REPO / "params.yaml", *PRESETS], ids=lambda path: path.name)
def test_every_params_file_sets_every_key_and_validates(path):
    raw = yaml.safe_load(path.read_text())
    assert _keys(raw) == _keys(load_params(REPO / "params.yaml").model_dump())
    load_params(path)


def test_quick_preset_is_the_shipped_method_made_small():
    quick, shipped = yaml.safe_load((REPO / "presets" / "quick.yaml").read_text()), load_params(REPO / "params.yaml")
    differing = {
        f"{section}.{key}"
        for section, values in shipped.model_dump().items() if isinstance(values, dict)
        for key, value in values.items() if quick[section][key] != value and key not in QUICK_SIZE_KEYS.get(section, ())
    }  # fmt: skip
    assert differing == set(), "presets/quick.yaml departs from params.yaml's method"
    assert quick["seed"] == shipped.seed and quick["runtime"] == shipped.runtime.model_dump()


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
    workspace = Workspace(tmp_path)
    summary = prepare.run(params, workspace)
    assert summary["classes"] == 2 and (summary["train"], summary["val"], summary["test"]) == (4, 2, 4)
    assert tuple(summary["shape"]) == (3, 224, 224)
    classes, _ = load_classes(workspace.classes)
    test, _ = load_split(workspace.split("test"), classes)
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
    workspace = Workspace(tmp_path)
    summary = prepare.run(params, workspace)
    assert summary["classes"] == 3 and (summary["train"], summary["val"], summary["test"]) == (7, 2, 6)
    assert tuple(summary["shape"]) == (3, 32, 32)
    assert load_classes(workspace.classes)[0] == ["apple", "bee", "cloud"]
