"""The CUDA path on real kernels. CI has no GPU, so these skip there; `bench/device_check.sh` runs them on one."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helio_core.models import architectures as models
from helio_core.models.projector import ProjectorSpec, build_projector
from helio_core.params import load_params
from helio_core.runtime import Runtime, started
from helio_core.training.engine import make_optimizer
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_auto_runtime_takes_the_gpu_with_half_precision_autocast():
    with started(
        load_params(REPO / "params.yaml", ["runtime.device=auto", "runtime.precision=auto"]).runtime
    ) as runtime:
        assert runtime.device.type == "cuda"
        assert runtime.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_student_fits_a_fixed_batch_under_autocast(precision):
    runtime = Runtime(CUDA, precision)
    torch.manual_seed(0)
    model = models.create_model("resnet18", 4, 1, 28, [0.5], [0.5]).to(CUDA, memory_format=torch.channels_last)
    images, labels = runtime.to_device(torch.rand(16, 1, 28, 28)), runtime.to_device(torch.arange(16) % 4)
    optimizer = make_optimizer(model.parameters(), "adamw", lr=1e-3, weight_decay=0.0)
    scaler = runtime.grad_scaler()
    losses = []
    for _ in range(40):
        with runtime.autocast():
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.2 * losses[0], losses


def test_projector_under_bf16_on_the_gpu_labels_like_fp32_on_the_cpu():
    torch.manual_seed(0)
    images, labels = torch.rand(24, 3, 32, 32), torch.arange(24) % 4
    spec = ProjectorSpec("efficientnet_lite0", 32, "multi", "prototypes", 2, 8.0, "all", 2)
    projector = build_projector(spec, ["a", "b", "c", "d"], images, labels, logit_scale=10.0, seed=0).eval()
    with torch.no_grad():
        on_cpu = projector(images)
        projector.to(CUDA)
        with Runtime(CUDA, "bf16").autocast():
            on_gpu = projector(images.to(CUDA)).float().cpu()
    assert (on_gpu - on_cpu).abs().max() < 0.05 * on_cpu.abs().max()
    assert (on_gpu.softmax(1) - on_cpu.softmax(1)).abs().max() < 0.02


def test_lora_gradients_reach_only_the_adapters_on_the_gpu():
    torch.manual_seed(0)
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    spec = ProjectorSpec("efficientnet_lite0", 32, "multi", "prototypes", 2, 8.0, "all", 2)
    projector = build_projector(spec, ["a", "b", "c", "d"], images, labels, logit_scale=10.0, seed=0).to(CUDA)
    with Runtime(CUDA, "bf16").autocast():
        loss = F.cross_entropy(projector(images.to(CUDA)).float(), labels.to(CUDA))
    loss.backward()
    trainable = projector.trainable_parameters()
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert all(p.grad is None for p in projector.parameters() if not p.requires_grad)


SHARED_GPU_SCRIPT = """
import sys, torch
from helio_core.params import load_params
from helio_core.runtime import started
params = load_params(sys.argv[1], ["runtime.device=cuda", "runtime.ranks_per_gpu=2"]).runtime
with started(params) as runtime:
    model = torch.nn.Linear(2, 1, bias=False).to(runtime.device)
    wrapped = runtime.parallel(model)  # held: a wrapper collected before backward would all-reduce nothing
    wrapped(torch.full((1, 2), float(runtime.rank), device=runtime.device)).sum().backward()
    seen = f"{runtime.device} {runtime.gather(runtime.rank)} {model.weight.grad.tolist()}"
    open(f"{sys.argv[2]}/rank{runtime.rank}.txt", "w").write(seen)
"""


def test_two_ranks_share_one_gpu_over_gloo(tmp_path):
    """runtime.ranks_per_gpu=2: two torchrun processes on GPU 0 (NCCL would refuse), gathering and averaging
    gradients: each rank's gradient is the mean of both ranks' inputs (0 and 1)."""
    script = tmp_path / "shared_gpu.py"
    script.write_text(SHARED_GPU_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(REPO / "params.yaml"), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "0"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert seen == ["cuda:0 [0, 1] [[0.5, 0.5]]"] * 2
