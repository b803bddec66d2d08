import copy

import pytest
import torch
import torchvision
from torch import nn

from helio_core.errors import HelioError
from helio_core.models import lora


def _encoder():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2(weights=None, num_classes=7).eval()


def test_untrained_lora_leaves_the_encoder_unchanged():
    base = _encoder()
    adapted = copy.deepcopy(base)
    names = lora.add_lora(adapted, rank=4, alpha=8)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(adapted(x), base(x))
    grouped = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert grouped and not set(grouped) & set(names)
    assert all(not p.requires_grad for n, p in adapted.named_parameters() if "lora_" not in n)


def test_trained_delta_equals_a_conv_into_r_channels_then_a_1x1_conv():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False)
    reference = copy.deepcopy(conv)
    lora.add_lora(conv, rank=2, alpha=4)
    delta = conv.parametrizations.weight[0]
    nn.init.normal_(delta.lora_b)
    a_conv = nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=False)
    a_conv.weight.data = delta.lora_a.data.view(2, 3, 3, 3)
    b_conv = nn.Conv2d(2, 5, 1, bias=False)
    b_conv.weight.data = delta.lora_b.data.view(5, 2, 1, 1)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(conv(x), reference(x) + 2.0 * b_conv(a_conv(x)))


def test_parameter_count_matches_the_formula_and_the_exported_tensors():
    encoder = _encoder()
    lora.add_lora(encoder, rank=8, alpha=16)
    layers = [m for _, m in lora.adaptable_layers(encoder)]
    formula = sum(
        8 * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels)
        if isinstance(m, nn.Conv2d)
        else 8 * (m.in_features + m.out_features)
        for m in layers
    )
    exported = sum(t.numel() for t in lora.lora_state(encoder).values())
    assert exported == formula == lora.lora_parameter_count(layers, 8)


def test_export_then_import_reproduces_outputs_bit_exactly():
    trained = _encoder()
    lora.add_lora(trained, rank=4, alpha=4, targets=["features.1*", "classifier.*"])
    for parameter in lora.lora_parameters(trained):
        nn.init.normal_(parameter, std=0.02)
    state = lora.lora_state(trained)
    assert state and all(".lora_" in name for name in state)
    fresh = _encoder()
    lora.add_lora(fresh, rank=4, alpha=4, targets=["features.1*", "classifier.*"])
    lora.load_lora_state(fresh, state, "test")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh(x), trained(x))
    other = _encoder()
    lora.add_lora(other, rank=2, alpha=4, targets=["features.1*", "classifier.*"])
    with pytest.raises(HelioError, match="test: .*lora_a has shape"):
        lora.load_lora_state(other, state, "test")


def test_targets_that_match_nothing_are_an_error():
    with pytest.raises(HelioError, match="lora.targets=\\['nothing.*'\\] matches no Conv2d or Linear layer"):
        lora.add_lora(_encoder(), rank=4, alpha=4, targets=["nothing.*"])
