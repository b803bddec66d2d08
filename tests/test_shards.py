"""A prepared split is a folder of shards: it reads back bit-exact by any index, and a missing, truncated or
damaged shard is a one-line error naming it."""

import json

import pytest
import torch
from PIL import Image

from helio_core.data.files import ImageFiles
from helio_core.data.splits import ChannelSums, ImageSet, channel_stats, classes_sha256, load_split, resize, write_split
from helio_core.errors import HelioError

CLASSES = ["a", "b", "c"]


def written(tmp_path, count=23, shard_images=5):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    metadata = {"split": "train", "classes_sha256": classes_sha256(CLASSES)}
    split = ImageSet(images, labels, CLASSES)
    write_split(tmp_path / "train", split, 4, metadata, ([0.5], [0.2]), shard_bytes=shard_images * 48)
    return images, labels


def test_a_split_reads_back_bit_exact_by_every_kind_of_index(tmp_path):
    images, labels = written(tmp_path)
    assert sorted(p.name for p in (tmp_path / "train").iterdir())[:2] == ["index.json", "shard_00000.safetensors"]
    assert len(list((tmp_path / "train").glob("shard_*.safetensors"))) == 5  # 23 images, 5 a shard
    split, metadata = load_split(tmp_path / "train", CLASSES)
    assert torch.equal(split.labels, labels) and metadata["mean"] == [0.5] and metadata["split"] == "train"
    assert split.images.shape == images.shape and len(split.images) == 23
    shuffled = torch.tensor([22, 0, 4, 5, 5, 6, 13, 12, 1])  # across shards, repeated, out of order
    mask = labels == 1
    for index in (shuffled, mask, slice(3, 17), slice(None, None, 4), [7, 3], -1, 0):
        assert torch.equal(split.images[index], images[index]), index
    assert torch.equal(split.images[torch.tensor([], dtype=torch.int64)], images[:0])


def test_a_missing_shard_is_one_line_naming_it(tmp_path):
    written(tmp_path)
    (tmp_path / "train" / "shard_00003.safetensors").unlink()
    with pytest.raises(HelioError, match=r"shard_00003.safetensors: missing shard \(listed in .*index.json\)$"):
        load_split(tmp_path / "train", CLASSES)


def test_a_truncated_shard_is_one_line_naming_it(tmp_path):
    written(tmp_path)
    shard = tmp_path / "train" / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(HelioError, match=r"shard_00001.safetensors: [\d,]+ bytes, [\d,]+ recorded in index.json"):
        load_split(tmp_path / "train", CLASSES)


def test_a_damaged_shard_is_found_when_first_read(tmp_path):
    images, _ = written(tmp_path)
    shard = tmp_path / "train" / "shard_00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-200] ^= 0xFF  # an image byte: same size, other content
    shard.write_bytes(bytes(data))
    split, _ = load_split(tmp_path / "train", CLASSES)
    assert torch.equal(split.images[:10], images[:10])  # the intact shards read
    with pytest.raises(HelioError, match="shard_00002.safetensors: damaged: its tensors do not match the sha256"):
        split.images[10:12]


def test_another_class_list_or_a_foreign_index_is_refused(tmp_path):
    written(tmp_path)
    with pytest.raises(HelioError, match="train: made for another class list"):
        load_split(tmp_path / "train", ["x", "y", "z"])
    index = json.loads((tmp_path / "train" / "index.json").read_text())
    (tmp_path / "train" / "index.json").write_text(json.dumps({**index, "kind": "projector"}))
    with pytest.raises(HelioError, match=r"index.json: not the index of a prepared data split"):
        load_split(tmp_path / "train", CLASSES)
    (tmp_path / "train" / "index.json").write_text(json.dumps({**index, "count": 40}))
    with pytest.raises(HelioError, match=r"index.json: 40 images listed, its shards hold 23"):
        load_split(tmp_path / "train", CLASSES)


def test_channel_stats_are_exact_whatever_the_batches():
    images = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    sums = ChannelSums()
    for chunk in images.split(7):
        sums.add(chunk)
    assert sums.stats() == channel_stats(images)
    values = images.transpose(0, 1).reshape(3, -1).double() / 255
    mean, std = sums.stats()
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), values.mean(1), rtol=1e-12)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), values.std(1), rtol=1e-12)


def test_a_split_is_resized_and_measured_a_shard_at_a_time(tmp_path):
    images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(11) % 3
    metadata = {"split": "train", "classes_sha256": classes_sha256(CLASSES)}
    stats = write_split(tmp_path / "train", ImageSet(images, labels, CLASSES), 4, metadata, shard_bytes=3 * 48)
    split, recorded = load_split(tmp_path / "train", CLASSES)
    assert torch.equal(split.images[:], resize(images, 4)) and len(list((tmp_path / "train").glob("shard_*"))) == 4
    assert stats == (recorded["mean"], recorded["std"]) == channel_stats(resize(images, 4))


def test_image_files_decode_in_workers_in_order_and_name_an_unreadable_file(tmp_path):
    paths = []
    for k in range(5):
        Image.new("RGB", (12 + k, 10), color=(k * 50, 0, 255 - k * 50)).save(tmp_path / f"{k}.png")
        paths.append(tmp_path / f"{k}.png")
    alone = torch.cat(list(ImageFiles(paths, 8).split(2)))
    assert alone.shape == (5, 3, 8, 8) and alone[:, 0, 4, 4].tolist() == [0, 50, 100, 150, 200]
    assert torch.equal(torch.cat(list(ImageFiles(paths, 8, workers=1).split(2))), alone)
    assert torch.equal(torch.cat(list(ImageFiles(paths, 8)[torch.tensor([4, 1])].split(5))), alone[[4, 1]])
    (tmp_path / "3.png").write_bytes(b"not a png")
    with pytest.raises(HelioError, match=r"3.png: not a readable image \(") as failure:
        list(ImageFiles(paths, 8, workers=1).split(2))
    assert "\n" not in str(failure.value)
