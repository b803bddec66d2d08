import gzip
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from helio_core import artifacts
from helio_core.data.sources import load_source, read_idx
from helio_core.data.splits import cap_per_class, classes_sha256, load_classes, load_split
from helio_core.errors import HelioError
from helio_core.params import load_params
from helio_core.workspace import Workspace
from stages import prepare
from tests.conftest import REPO


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open(path, "wb") if gz else open(path, "wb")).write(data)


def _idx_root(tmp_path, n_train=30, n_test=10):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), gz=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=False)
    return tmp_path


def test_idx_reader_reads_gz_and_plain_and_rejects_truncation(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array, gz=True)
    _write_idx(tmp_path / "b", array, gz=False)
    assert (read_idx(tmp_path / "a.gz") == array).all() and (read_idx(tmp_path / "b") == array).all()
    (tmp_path / "c").write_bytes((tmp_path / "b").read_bytes()[:-5])
    with pytest.raises(HelioError, match="truncated"):
        read_idx(tmp_path / "c")


def test_mnist_source_from_idx_files(tmp_path):
    params = load_params(REPO / "params.yaml", ["data.name=mnist", f"data.root={_idx_root(tmp_path)}"])
    train, test = load_source(params.data, seed=0)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == list(range(10)) and train.classes[3] == "3"


def test_mnist_requires_a_root():
    params = load_params(REPO / "params.yaml", ["data.name=mnist"])
    with pytest.raises(HelioError, match="data.root must be set for data.name=mnist"):
        load_source(params.data, seed=0)


def test_missing_data_root_is_named(tmp_path):
    params = load_params(REPO / "params.yaml", [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(HelioError, match=r"data.root=.*nowhere: folder not found for data.name=fashion-mnist"):
        load_source(params.data, seed=0)


def test_missing_idx_file_is_named(tmp_path):
    root = _idx_root(tmp_path)
    (root / "t10k-labels-idx1-ubyte").unlink()
    params = load_params(REPO / "params.yaml", [f"data.root={root}"])
    with pytest.raises(HelioError, match="missing t10k-labels-idx1-ubyte"):
        load_source(params.data, seed=0)


def _imagefolder(root, classes=("zebra", "ant", "moth"), per_class=3):
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", (40 + k, 30), color=(index * 80, k * 40, 0)).save(folder / f"{k}.jpg")
    return root


def test_imagefolder_class_order_is_sorted_and_hash_stable(tmp_path):
    root = _imagefolder(tmp_path / "if")
    params = load_params(REPO / "params.yaml", ["data.name=imagefolder", f"data.root={root}", "data.size=16"])
    train, val = load_source(params.data, seed=0)
    assert train.classes == ["ant", "moth", "zebra"]
    assert train.images.shape == (9, 3, 16, 16) and val.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    again, _ = load_source(params.data, seed=0)
    assert classes_sha256(again.classes) == classes_sha256(train.classes)
    assert classes_sha256(["moth", "ant", "zebra"]) != classes_sha256(train.classes)


def test_imagefolder_classes_take_their_names_from_a_synset_mapping(tmp_path):
    root = _imagefolder(tmp_path / "if", classes=("n02", "n01", "n03"))
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01 tench, Tinca tinca\nn03 great white shark\n\nn02 goldfish, Carassius auratus\nn04 unused\n")
    params = load_params(
        REPO / "params.yaml",
        ["data.name=imagefolder", f"data.root={root}", "data.size=16", f"data.class_names={mapping}"],
    )
    train, val = load_source(params.data, seed=0)
    assert train.classes == val.classes == ["tench", "goldfish", "great white shark"]  # folder order n01 n02 n03
    assert val.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("n01 tench\nn02 goldfish\n", "no name for class folder 'n03' (1 folders unnamed)"),
        ("n01 crane\nn02 goldfish\nn03 crane\n", "'crane' names two class folders, n01 and n03; give each its own"),
        ("n01 tench\nn02\nn03 shark\n", ":2: expected '<folder> <class name>', got 'n02'"),
    ],
)
def test_a_bad_synset_mapping_is_named(tmp_path, text, error):
    root = _imagefolder(tmp_path / "if", classes=("n01", "n02", "n03"))
    mapping = tmp_path / "names.txt"
    mapping.write_text(text)
    params = load_params(
        REPO / "params.yaml",
        ["data.name=imagefolder", f"data.root={root}", "data.size=16", f"data.class_names={mapping}"],
    )
    with pytest.raises(HelioError, match=re.escape(error)):
        load_source(params.data, seed=0)


def test_class_names_are_for_image_folders_only():
    with pytest.raises(HelioError, match="data.class_names is for data.name=imagefolder, not fashion-mnist"):
        load_params(REPO / "params.yaml", ["data.class_names=names.txt"])


def test_imagefolder_empty_class_folder_is_named(tmp_path):
    root = _imagefolder(tmp_path / "if")
    for file in (root / "train" / "moth").iterdir():
        file.unlink()
    params = load_params(REPO / "params.yaml", ["data.name=imagefolder", f"data.root={root}", "data.size=16"])
    with pytest.raises(HelioError, match=r"train/moth: empty class folder"):
        load_source(params.data, seed=0)


def test_cifar10_batches_load_without_unpickling_arbitrary_objects(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": ["plane", "car", "bird", "cat"]}))
    params = load_params(REPO / "params.yaml", ["data.name=cifar10", f"data.root={root}"])
    train, test = load_source(params.data, seed=0)
    assert train.images.shape == (20, 3, 32, 32) and test.classes == ["plane", "car", "bird", "cat"]

    (root / "test_batch").write_bytes(pickle.dumps({"data": print, "labels": []}))
    with pytest.raises(HelioError, match="refusing to load builtins.print"):
        load_source(params.data, seed=0)


def test_cap_per_class_is_seeded_and_balanced(quick_params):
    train, _ = load_source(quick_params.data, seed=0)
    capped = cap_per_class(train, 5, torch.Generator().manual_seed(1))
    assert torch.bincount(capped.labels).tolist() == [5, 5, 5, 5]
    again = cap_per_class(train, 5, torch.Generator().manual_seed(1))
    assert torch.equal(capped.images, again.images)


def test_prepare_writes_splits_classes_and_provenance(workdir, quick_params):
    report = prepare.run(quick_params, Workspace())
    paths = Workspace()
    classes, digest = load_classes(paths.classes)
    train, metadata = load_split(paths.split("train"), classes)
    assert report["train"] == 4 * 64 - 32 and train.images.shape == (224, 3, 16, 16)
    val, _ = load_split(paths.split("val"), classes)
    assert report["val"] == 32 and val.images.shape == (32, 3, 16, 16)
    train_rows = {bytes(image.numpy()) for image in train.images[:]}
    assert not train_rows & {bytes(image.numpy()) for image in val.images[:]}, "val images leaked into train"
    assert train.images[:].dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert classes == ["class_0", "class_1", "class_2", "class_3"] and metadata["classes_sha256"] == digest
    assert metadata["provenance"]["params"]["data"]["name"] == "synthetic" and len(metadata["mean"]) == 3


def test_prepare_twice_gives_identical_files(workdir, quick_params):
    prepare.run(quick_params, Workspace())
    first = artifacts.sha256_tree("artifacts/data")
    prepare.run(quick_params, Workspace())
    assert artifacts.sha256_tree("artifacts/data") == first


def test_failed_prepare_leaves_no_partial_output(workdir):
    params = load_params(REPO / "params.yaml", [f"data.root={workdir / 'nowhere'}"])
    with pytest.raises(HelioError):
        prepare.run(params, Workspace())
    assert not (workdir / "artifacts").exists()
