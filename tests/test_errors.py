"""Every bad input of the README's "Errors you may meet" table fails with one HelioError line naming the file or key.

Rows already covered elsewhere are listed in the README with their test; this file holds the rest.
"""

import pickle
import re

import open_clip
import pytest
import torch

from helio_core import artifacts, runtime
from helio_core.data.distilled import image_name, load_distilled
from helio_core.data.sources import load_source
from helio_core.data.splits import classes_sha256, load_classes
from helio_core.errors import HelioError
from helio_core.models.backbones import create_backbone
from helio_core.models.projector import load_projector
from helio_core.params import load_params
from tests.conftest import REPO, write_tiny_clip_projector

CLASSES = ["cat", "dog", "ant"]


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ---- params -------------------------------------------------------------------------------------------

ARCHS = "convnet3, efficientnet_b0, mobilenet_v2, resnet18, resnet18_cifar, shufflenet_v2, swin_v2_t, vgg11"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("select.ipc=-1", "select.ipc must be > 0, got -1"),
        ("lora.rank=-1", "lora.rank must be >= 0, got -1"),
        ("lora.head_rank=-2", "lora.head_rank must be >= 0, got -2"),
        ("lora.rank=two", "lora.rank must be an integer, got 'two'"),
        ("teachers.arch=resnet19", f"teachers.arch must be one of {ARCHS}; got 'resnet19'"),
        ("student.archs=[resnet18, vit]", f"student.archs[1] must be one of {ARCHS}; got 'vit'"),
        ("runtime.device=gpu", "runtime.device must be one of auto, cpu, cuda; got 'gpu'"),
        ("runtime.threads=0", "runtime.threads must be > 0, got 0"),
    ],
)
def test_bad_param_names_the_key(override, message):
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        load_params(REPO / "presets" / "quick.yaml", [override])
    _one_line(error)


def test_rank_zero_means_no_lora_and_is_accepted():
    params = load_params(REPO / "presets" / "quick.yaml", ["lora.rank=0", "lora.head_rank=0"])
    assert params.lora.rank == 0 and params.lora.head_rank == 0


# ---- data roots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mnist", "missing train-images-idx3-ubyte[.gz]"),
        ("cifar10", "batches.meta: missing CIFAR batch file"),
        ("imagefolder", "train: missing; an ImageFolder root needs train/ and val/ class folders"),
    ],
)
def test_empty_data_root_names_what_is_missing(tmp_path, name, message):
    params = load_params(REPO / "params.yaml", [f"data.name={name}", f"data.root={tmp_path}"])
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        load_source(params.data, seed=0)
    assert str(tmp_path) in _one_line(error)


# ---- projector files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def projector_file(tmp_path_factory):
    """A valid fp32 projector on the tiny CLIP config (random weights in a local checkpoint)."""
    folder = tmp_path_factory.mktemp("projector")
    return write_tiny_clip_projector(folder, folder / "projector.safetensors", CLASSES)


def _edited(source, target, edit_metadata=None, edit_tensors=None):
    tensors, metadata = artifacts.load_tensors(source)
    (edit_metadata or (lambda m: None))(metadata)
    (edit_tensors or (lambda t: None))(tensors)
    artifacts.save_tensors(target, tensors, metadata)
    return target


def test_valid_projector_file_loads(projector_file):
    projector, metadata = load_projector(projector_file, expected_classes_sha256=classes_sha256(CLASSES))
    assert metadata["classes"] == CLASSES and projector.head.weight.shape[0] == 3


def _truncated(source, target):
    target.write_bytes(source.read_bytes()[:-100])
    return target


def _data_byte_flipped(source, target):
    data = bytearray(source.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: the header still parses
    target.write_bytes(bytes(data))
    return target


def _pickled(source, target):
    torch.save({"head.weight": torch.zeros(3, 32)}, target)
    return target


def _text(source, target):
    target.write_text("projector, honest")
    return target


def _not_a_projector(source, target):
    artifacts.save_tensors(target, {"images": torch.zeros(1)}, {"kind": "dataset-split"})
    return target


def _spec_edited(source, target):
    return _edited(source, target, lambda m: m["spec"].update(rank="eight"))


def _classes_edited(source, target):
    return _edited(source, target, lambda m: m.update(classes=["cat", "dog", "bee"]))


def _tensor_dropped(source, target):
    return _edited(source, target, edit_tensors=lambda t: t.pop("logit_scale"))


def _head_reshaped(source, target):
    return _edited(source, target, edit_tensors=lambda t: t.update({"head.lora_b": torch.zeros(4, 2)}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncated, "corrupt or truncated safetensors file"),
        (_data_byte_flipped, "damaged: its tensors do not match the sha256 recorded"),
        (_pickled, "not a helio safetensors file"),
        (_text, "not a helio safetensors file"),
        (_not_a_projector, "not a projector file (kind='dataset-split')"),
        (_spec_edited, "projector spec has a missing, unknown or malformed 'rank'"),
        (_classes_edited, "the class list does not match its recorded sha256"),
        (_tensor_dropped, "projector file lacks the tensors ['logit_scale']"),
        (_head_reshaped, "head.lora_b has shape (4, 2), expected (3, 2)"),
    ],
)
def test_damaged_projector_file_is_named(projector_file, tmp_path, damage, message):
    path = damage(projector_file, tmp_path / "bad.safetensors")
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        load_projector(path)
    assert _one_line(error).startswith(str(path))


# ---- distilled set and class list ---------------------------------------------------------------------


def _distilled(folder, labels=(0, 1, 2), classes=CLASSES):
    (folder / "images").mkdir(parents=True)
    entries = []
    for index, label in enumerate(labels):
        name = image_name(label, index)
        artifacts.write_png(folder / name, torch.full((3, 8, 8), 10 * index, dtype=torch.uint8))
        entries.append({"file": name, "label": label})
    artifacts.write_json(folder / "labels.json", {"images": entries, "classes_sha256": classes_sha256(classes)})
    return folder


def test_valid_distilled_set_loads(tmp_path):
    images, labels = load_distilled(_distilled(tmp_path), classes_sha256(CLASSES))
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == [0, 1, 2]


def _extra_png(folder):
    artifacts.write_png(folder / "images" / "9_9.png", torch.zeros(3, 8, 8, dtype=torch.uint8))


def _missing_png(folder):
    (folder / "images" / "1_1.png").unlink()


def _odd_png(folder):
    artifacts.write_png(folder / "images" / "1_1.png", torch.zeros(3, 9, 8, dtype=torch.uint8))


def _broken_png(folder):
    (folder / "images" / "1_1.png").write_bytes(b"\x89PNG not really")


def _labels_not_json(folder):
    (folder / "labels.json").write_text('{"images": [')


def _labels_wrong_shape(folder):
    artifacts.write_json(folder / "labels.json", {"images": [{"path": "x.png"}], "classes_sha256": ""})


def _edit_first_entry(folder, **changes):
    record = artifacts.read_json(folder / "labels.json")
    record["images"][0].update(changes)
    artifacts.write_json(folder / "labels.json", record)


def _label_not_an_index(folder):
    _edit_first_entry(folder, label=1.5)


def _label_out_of_range(folder):
    _edit_first_entry(folder, label=2**70)


def _file_outside_the_folder(folder):
    _edit_first_entry(folder, file="../../elsewhere.png")


def _labels_empty(folder):
    for png in (folder / "images").iterdir():
        png.unlink()
    artifacts.write_json(folder / "labels.json", {"images": [], "classes_sha256": classes_sha256(CLASSES)})


def _labels_other_classes(folder):
    record = artifacts.read_json(folder / "labels.json")
    artifacts.write_json(folder / "labels.json", {**record, "classes_sha256": classes_sha256(["x", "y"])})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_extra_png, "labels.json: lists 3 images but"),
        (_missing_png, "labels.json: lists 3 images but"),
        (_odd_png, "1_1.png: image is (3, 9, 8), expected (3, 8, 8)"),
        (_broken_png, "1_1.png: not a readable PNG image"),
        (_labels_not_json, "labels.json: not valid JSON"),
        (_labels_wrong_shape, "labels.json: expected 'images' entries with 'file' (inside its folder) and 'label'"),
        (_label_not_an_index, "labels.json: expected 'images' entries with 'file' (inside its folder) and 'label'"),
        (_label_out_of_range, "labels.json: expected 'images' entries with 'file' (inside its folder) and 'label'"),
        (_file_outside_the_folder, "labels.json: expected 'images' entries with 'file' (inside its folder)"),
        (_labels_empty, "labels.json: lists no images"),
        (_labels_other_classes, "labels.json: distilled images made for another class list"),
    ],
)
def test_distilled_set_not_matching_is_named(tmp_path, damage, message):
    folder = _distilled(tmp_path)
    damage(folder)
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        load_distilled(folder, classes_sha256(CLASSES))
    _one_line(error)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["cat"]', "expected keys 'classes' and 'sha256'"),
        ('{"classes": "cat", "sha256": ""}', "'classes' must be a list of names"),
        ('{"classes": ["cat", "dog"], "sha256": "0"}', "does not match its recorded sha256"),
        ("\x00\x01", "not valid JSON"),
    ],
)
def test_bad_classes_json_is_named(tmp_path, content, message):
    path = tmp_path / "classes.json"
    path.write_text(content)
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        load_classes(path)
    assert _one_line(error).startswith(str(path))


# ---- open_clip weights --------------------------------------------------------------------------------


def test_unreachable_pretrained_weights_say_to_pass_a_local_checkpoint(monkeypatch):
    def offline(*args, **kwargs):  # what open_clip 3 raises when neither the hub nor the cache has the file
        raise RuntimeError(
            "Failed to download weights for tag 'openai': Failed to download file (open_clip_pytorch_model.bin) "
            "for timm/resnet50_clip.openai. Last error: 404 Entry not found\nwith a second line"
        )

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(HelioError) as error:
        create_backbone("open_clip:RN50/openai")
    message = _one_line(error)
    assert message.startswith("projector.backbone=open_clip:RN50/openai: cannot load pretrained weights 'openai'")
    assert message.endswith(
        "without internet, copy the checkpoint file here and use open_clip:RN50//path/to/checkpoint.pt"
    )


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("open_clip:RN51/openai", "projector.backbone=open_clip:RN51/openai: open_clip has no model 'RN51'"),
        ("open_clip:RN50/nonsense", "'nonsense' is neither a pretrained tag of RN50 nor a checkpoint file"),
        ("open_clip:RN50//no/such/file.pt", "'/no/such/file.pt' is neither a pretrained tag of RN50 nor a checkpoint"),
    ],
)
def test_unknown_open_clip_model_tag_or_file_is_named(backbone, message):
    with pytest.raises(HelioError, match=re.escape(message)) as error:
        create_backbone(backbone)
    _one_line(error)


def test_a_checkpoint_for_another_model_is_named(tmp_path):
    path = tmp_path / "other.pt"
    path.write_bytes(pickle.dumps({"not": "weights"}))
    with pytest.raises(HelioError, match=re.escape(f"{path}: not an open_clip tiny-rn-clip checkpoint")) as error:
        create_backbone(f"open_clip:tiny-rn-clip/{path}")
    _one_line(error)


def test_a_torchvision_file_that_is_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(pickle.dumps(print))
    with pytest.raises(HelioError, match=re.escape(f"{path}: not a resnet18 state dict")) as error:
        create_backbone(f"torchvision:resnet18/{path}")
    _one_line(error)


def test_cuda_asked_for_without_cuda_is_an_error_not_a_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = load_params(REPO / "presets" / "quick.yaml", ["runtime.device=cuda"])
    with pytest.raises(HelioError, match=re.escape("runtime.device=cuda but torch sees no CUDA device")) as error:
        with runtime.started(params.runtime):
            pass
    _one_line(error)
    with runtime.started(load_params(REPO / "presets" / "quick.yaml", ["runtime.device=auto"]).runtime) as here:
        assert here.device.type == "cpu" and here.precision == "fp32" and here.world_size == 1
