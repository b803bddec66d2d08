"""Weights in fewer bits: what the stored tensors hold, that they restore within half a level, and the quantised
teacher that the teacher_int8 / teacher_int4 label modes label with."""

import pytest
import torch

from helio_core.models import architectures as models
from helio_core.models import quantise
from helio_core.training.students import quantised_teacher


@pytest.mark.parametrize(("dtype", "levels"), [("int8", 127), ("int4", 7)])
def test_quantised_weights_restore_within_half_a_level_per_output_channel(dtype, levels):
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)  # channels of different ranges
    state = {"conv.weight": weight, "bn.bias": torch.randn(6), "bn.num_batches_tracked": torch.tensor(3),
             "mean": torch.tensor([0.123456789])}  # fmt: skip
    tensors = quantise.stored(state, dtype, exact=("mean",))
    assert set(tensors) == {"conv.weight", f"conv.weight.{dtype}_scale", "bn.bias", "mean"}
    assert tensors["bn.bias"].dtype == torch.float16 and tensors["mean"].dtype == torch.float32
    scale = weight.abs().amax(dim=(1, 2, 3)) / levels
    torch.testing.assert_close(tensors[f"conv.weight.{dtype}_scale"], scale)
    restored = quantise.restored(tensors, {name: t.shape for name, t in state.items()})
    error = (restored["conv.weight"] - weight).abs().amax(dim=(1, 2, 3))
    assert (error <= scale / 2 + 1e-6).all() and restored["conv.weight"].shape == weight.shape
    assert restored["mean"].item() == state["mean"].item()


def test_int4_packs_two_levels_a_byte_whatever_the_parity():
    weight = torch.tensor([[-7.0, -1.0, 0.0, 3.0, 7.0]])  # odd: one padding nibble
    tensors = quantise.stored({"w": weight}, "int4")
    assert tensors["w"].dtype == torch.uint8 and tensors["w"].shape == (1, 3)
    assert quantise.restored(tensors, {"w": weight.shape})["w"].tolist() == weight.tolist()


def test_the_teacher_quantised_keeps_its_labels_in_a_quarter_and_an_eighth_of_the_bytes():
    torch.manual_seed(0)
    teacher = models.create_model("resnet18", 10, 1, 28, [0.3], [0.2]).eval()
    images = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        logits = teacher(images)
        full_bytes = quantise.stored_bytes(quantise.stored(teacher.state_dict(), "fp32", exact=("mean", "std")))
        labelled = {}
        for dtype in ("int8", "int4"):
            net, size = quantised_teacher(teacher, dtype)
            labelled[dtype] = (net(images), size)
    assert not any(p.requires_grad for p in net.parameters())
    int8, int4 = labelled["int8"], labelled["int4"]
    assert 0.24 < int8[1] / full_bytes < 0.27 and 0.12 < int4[1] / full_bytes < 0.15
    assert (int8[0] - logits).abs().max() < (int4[0] - logits).abs().max()
    assert (int8[0].argmax(1) == logits.argmax(1)).float().mean() > 0.9


def test_a_channels_last_teacher_quantises_as_the_students_stage_loads_it():
    """The students' stage keeps the teacher in channels_last memory: its weights are not row-contiguous, which
    safetensors refuses; the stored tensors must be the same as the contiguous teacher's."""
    torch.manual_seed(0)
    teacher = models.create_model("resnet18", 10, 1, 28, [0.3], [0.2]).eval()
    expected = quantise.stored(teacher.state_dict(), "int8", exact=("mean", "std"))
    teacher = teacher.to(memory_format=torch.channels_last)
    assert not all(t.is_contiguous() for t in teacher.state_dict().values())
    net, size = quantised_teacher(teacher, "int8")
    stored = quantise.stored(teacher.state_dict(), "int8", exact=("mean", "std"))
    assert stored.keys() == expected.keys() and all(torch.equal(stored[k], expected[k]) for k in expected)
    assert size == quantise.stored_bytes(expected)
