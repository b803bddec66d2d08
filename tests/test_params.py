import re

import pytest
import yaml

from helio_core.errors import HelioError
from helio_core.params import load_params
from tests.conftest import REPO


def test_shipped_params_and_presets_validate():
    default = load_params(REPO / "params.yaml")
    assert default.data.name == "fashion-mnist" and default.data.size == 28
    assert default.select.ipc == 10 and default.select.factor == 1
    assert len(default.teachers.keep) == 9
    assert default.student.label_modes == ["projector", "label_net", "teacher", "hard", "stored"]
    assert len(default.student.seeds) >= 3
    for preset in (REPO / "presets").glob("*.yaml"):
        load_params(preset)


def test_override_in_yaml_syntax():
    params = load_params(REPO / "params.yaml", ["select.ipc=1", "teachers.keep=[1, 3]", "projector.teachers=[3]"])
    assert params.select.ipc == 1 and params.teachers.keep == [1, 3]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("select.ipc=1.5", "select.ipc must be an integer, got 1.5"),
        ("select.ipc='ten'", "select.ipc must be an integer"),
        ("select.ipc=0", "select.ipc must be > 0"),
        ("data.name=imagenet", "data.name must be one of"),
        ("data.size=30", "select.factor=4 must divide data.size=30"),
        ("teachers.keep=[0, 12]", "teachers.keep must hold epochs between 1 and"),
        ("select.candidates=3", "select.candidates=3 must be at least ipc*factor^2=10"),
        ("select.colour=1", "unknown parameter select.colour"),
        ("teachers.flip=1", "teachers.flip must be true or false, got 1"),
        ("student.label_modes=[projector, oracle]", "student.label_modes[1] must be one of"),
        ("student.seeds=[1, 1]", "student.seeds lists an entry twice"),
        ("student.crop_scale=[0.8, 0.2]", "student.crop_scale must be [low, high]"),
        ("student.epochs=0", "student.epochs must be > 0"),
        ("refine.scale=3", "refine.scale=3 must divide data.size=28"),
        ("projector.views=augmented", "projector.views must be one of"),
        ("cross_arch.archs=[resnet18, alexnet]", "cross_arch.archs[1]"),
        ("cross_arch.label_modes=[stored]", "cross_arch.label_modes[0] must be one of"),
        ("cross_arch.seeds=[]", "cross_arch.seeds must list at least one entry"),
        ("cross_arch.lr={vgg16: 0.01}", "cross_arch.lr names 'vgg16', which is not one of cross_arch.archs"),
        ("cross_arch.lr={swin_v2_t: fast}", "cross_arch.lr.swin_v2_t must be a number, got 'fast'"),
        ("cross_arch.lr=0.01", "cross_arch.lr must be a mapping of a string to a number, got 0.01"),
        ("fair.random_label_modes=[hard, hard]", "fair.random_label_modes lists an entry twice"),
        ("fair.weight=1.5", "fair.weight must be <= 1.0, got 1.5"),
    ],
)
def test_bad_values_name_the_key(override, message):
    overrides = [override] + (["select.factor=4"] if override.startswith("data.size") else [])
    with pytest.raises(HelioError, match=re.escape(message)):
        load_params(REPO / "params.yaml", overrides)


def test_missing_params_file(tmp_path):
    with pytest.raises(HelioError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_a_missing_key_is_named(tmp_path):
    """No defaults in code: a params file that leaves a key out fails naming it, instead of silently running."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["student"]["projector_loss"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(HelioError, match=re.escape("student.projector_loss is missing: a params file sets every key")):
        load_params(tmp_path / "params.yaml")


def test_student_crop_false_keeps_views_whole_and_refuses_a_crop_scale():
    assert load_params(REPO / "params.yaml", ["select.factor=2"]).student_crop_scale == [0.5, 1.0]  # RDED's (1/f, 1)
    assert load_params(REPO / "params.yaml", ["student.crop=false"]).student_crop_scale is None
    with pytest.raises(HelioError, match=r"^student.crop_scale is set but student.crop is false: set crop_scale"):
        load_params(REPO / "params.yaml", ["student.crop=false", "student.crop_scale=[0.5, 1.0]"])
