import pytest
import torch

from helio_core import artifacts
from helio_core.errors import HelioError


def test_tensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    artifacts.save_tensors(path, {"a": torch.arange(6).view(2, 3)}, {"kind": "test", "n": [1, 2]})
    tensors, metadata = artifacts.load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(6).view(2, 3)) and metadata == {"kind": "test", "n": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_truncated_and_foreign_files_raise_helio_errors(tmp_path):
    path = tmp_path / "x.safetensors"
    artifacts.save_tensors(path, {"a": torch.zeros(100)}, {"kind": "test"})
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-40])
    with pytest.raises(HelioError, match="cut.safetensors: corrupt or truncated"):
        artifacts.load_tensors(tmp_path / "cut.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, not tensors")
    with pytest.raises(HelioError, match="text.safetensors: not a helio safetensors file"):
        artifacts.load_tensors(tmp_path / "text.safetensors")
    with pytest.raises(HelioError, match="missing.safetensors: file not found"):
        artifacts.load_tensors(tmp_path / "missing.safetensors")


def test_atomic_path_keeps_old_output_when_writer_fails(tmp_path):
    target = tmp_path / "out"
    with artifacts.atomic_path(target) as staged:
        staged.mkdir()
        (staged / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as staged:
        staged.mkdir()
        (staged / "a.txt").write_text("half")
        raise RuntimeError("killed mid-way")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with artifacts.atomic_path(target) as staged:
        staged.mkdir()
        (staged / "b.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b.txt"]


def test_png_round_trip_is_lossless(tmp_path):
    grey = torch.randint(0, 256, (1, 9, 7), dtype=torch.uint8)
    colour = torch.randint(0, 256, (3, 5, 5), dtype=torch.uint8)
    artifacts.write_png(tmp_path / "g.png", grey)
    artifacts.write_png(tmp_path / "c.png", colour)
    assert torch.equal(artifacts.read_png(tmp_path / "g.png"), grey)
    assert torch.equal(artifacts.read_png(tmp_path / "c.png"), colour)


def test_tree_hash_sees_names_and_contents(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    first = artifacts.sha256_tree(tmp_path / "d")
    (tmp_path / "d" / "a").write_text("2")
    assert artifacts.sha256_tree(tmp_path / "d") != first


def test_tensor_files_are_byte_stable(tmp_path):
    tensors = {"b": torch.ones(3, dtype=torch.float16), "a": torch.arange(4)}
    for name in ("x", "y", "z"):
        artifacts.save_tensors(tmp_path / f"{name}.safetensors", tensors, {"kind": "test", "z": 1, "a": [2]})
    files = {(tmp_path / f"{name}.safetensors").read_bytes() for name in ("x", "y", "z")}
    assert len(files) == 1
