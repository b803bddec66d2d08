"""The runtime's arithmetic of shards and of ranks on GPUs, without a process group (ranks given by hand)."""

import pytest
import torch

from helio_core.errors import HelioError
from helio_core.runtime import CPU, Runtime, choose_device, choose_precision, process_group_backend


def test_shards_of_a_batch_partition_it_across_ranks():
    batch = torch.arange(11)
    shards = [Runtime(CPU.device, "fp32", rank, 3).shard(batch) for rank in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))
    assert [len(shard) for shard in shards] == [4, 4, 3]
    assert torch.equal(CPU.shard(batch), batch)


def test_jobs_are_dealt_round_robin_and_a_batch_smaller_than_the_world_is_refused():
    jobs = [("resnet18", seed, mode) for seed in (0, 1) for mode in ("projector", "teacher", "hard")]
    dealt = [Runtime(CPU.device, "fp32", rank, 4).shard_list(jobs) for rank in range(4)]
    assert sorted(job for share in dealt for job in share) == sorted(jobs) and [len(s) for s in dealt] == [2, 2, 1, 1]
    with pytest.raises(HelioError, match="a batch of 1 cannot be shared by 2 processes"):
        Runtime(CPU.device, "fp32", 1, 2).shard(torch.zeros(1))


def test_single_process_stages_refuse_torchrun():
    with pytest.raises(HelioError, match=r"select_patches runs in one process; start it without torchrun"):
        Runtime(CPU.device, "fp32", 0, 2).require_single("select_patches")
    CPU.require_single("select_patches")


def test_precision_auto_is_fp32_on_the_cpu_and_explicit_choices_stand():
    assert choose_precision("auto", torch.device("cpu")) == "fp32"
    assert choose_precision("bf16", torch.device("cpu")) == "bf16"
    assert CPU.record() == {"device": "cpu", "precision": "fp32", "world_size": 1}


def test_ranks_fill_the_gpus_ranks_per_gpu_at_a_time_over_gloo(monkeypatch):
    """Two GPUs seen (patched): one rank each by default, over NCCL; four ranks sharing them two by two use gloo,
    which, unlike NCCL, accepts two ranks on one device; a rank beyond the GPUs is refused in one line."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [choose_device("auto", rank).index for rank in range(2)] == [0, 1]
    assert [choose_device("cuda", rank, ranks_per_gpu=2).index for rank in range(4)] == [0, 0, 1, 1]
    with pytest.raises(HelioError, match=r"torchrun local rank 2 has no GPU \(2 visible, runtime.ranks_per_gpu=1\)"):
        choose_device("auto", 2)
    assert choose_device("cpu", 3, ranks_per_gpu=2) == torch.device("cpu")
    assert process_group_backend(torch.device("cuda", 0), 1) == "nccl"
    assert process_group_backend(torch.device("cuda", 0), 2) == "gloo"
    assert process_group_backend(torch.device("cpu"), 1) == "gloo"
