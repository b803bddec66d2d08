"""Where a stage runs, decided in one place: device, autocast precision, CPU threads, and the process
group when started by `torchrun` (NCCL on GPUs, gloo on the CPU or where ranks share a GPU).

Stages take a `Runtime` and ask it, never torch directly: which device a tensor goes to, whether this
process writes artifacts (rank 0 only), which share of a global batch it trains on. One process without
`torchrun` is a world of size 1, so the same code path runs everywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helio_core import artifacts
from helio_core.errors import HelioError
from helio_core.params import RuntimeParams

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16 (autocast dtype of forward passes)
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes artifacts, metrics and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def record(self) -> dict[str, Any]:
        """What provenance keeps of the runtime (not the thread count: it must not change artifacts' bytes)."""
        return {"device": self.device.type, "precision": self.precision, "world_size": self.world_size}

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes (a no-op at fp32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed by fp16 only (enabled=False makes every call a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch to the device; pinned host memory makes the copy asynchronous on CUDA."""
        if self.device.type == "cuda" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch (every rank draws the same batch from the same seed)."""
        if len(batch) < self.world_size:
            raise HelioError(
                f"a batch of {len(batch)} cannot be shared by {self.world_size} processes "
                "(choose batch sizes and image counts whose last batch holds at least one image per process)"
            )
        return batch[self.rank :: self.world_size]

    def require_single(self, stage: str) -> None:
        """For stages with nothing to share among processes: two ranks would both write the outputs."""
        if self.distributed:
            raise HelioError(f"{stage} runs in one process; start it without torchrun (python -m stages.{stage})")

    def shard_list(self, items: list[Any]) -> list[Any]:
        """This process's share of a list of independent jobs, dealt out round-robin."""
        return items[self.rank :: self.world_size]

    def parallel(self, model: nn.Module, broadcast_buffers: bool = True) -> nn.Module:
        """`model` wrapped for gradient all-reduce across processes; itself when alone. `broadcast_buffers`
        False for a model whose buffers are frozen (the projector's encoder): identical on every rank."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=broadcast_buffers)

    @contextlib.contextmanager
    def output(self, target: str | Path) -> Iterator[Path | None]:
        """Rank 0 writes `target` atomically (`artifacts.atomic_path`); the other ranks get None and write nothing."""
        if not self.is_main:
            yield None
            return
        with artifacts.atomic_path(target) as staged:
            yield staged

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


CPU = Runtime(torch.device("cpu"), "fp32")  # one process on the CPU at fp32: what library calls default to


def choose_device(requested: str, local_rank: int, ranks_per_gpu: int = 1) -> torch.device:
    """The device `requested` names (auto: CUDA when available); a CUDA request without CUDA is an error,
    not a silent CPU run. Local ranks fill the GPUs `ranks_per_gpu` at a time."""
    if requested not in ("auto", "cpu", "cuda"):
        raise HelioError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise HelioError("runtime.device=cuda but torch sees no CUDA device (use runtime.device=auto or cpu)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    index = local_rank // ranks_per_gpu
    if index >= torch.cuda.device_count():
        raise HelioError(f"torchrun local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible, "
                         f"runtime.ranks_per_gpu={ranks_per_gpu})")  # fmt: skip
    return torch.device("cuda", index)


def process_group_backend(device: torch.device, ranks_per_gpu: int) -> str:
    """NCCL between GPUs; gloo on the CPU, and where ranks share a GPU (NCCL refuses two ranks on one device)."""
    return "nccl" if device.type == "cuda" and ranks_per_gpu == 1 else "gloo"


def choose_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"  # CPU autocast to bf16 is no faster than fp32 on the CPUs benchmarked (bench/precision.py)
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@contextlib.contextmanager
def started(params: RuntimeParams) -> Iterator[Runtime]:
    """The runtime of this process; joins (and afterwards leaves) the `torchrun` process group if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = choose_device(params.device, local_rank, params.ranks_per_gpu)
    if device.type == "cpu":
        torch.set_num_threads(params.threads or max(1, len(os.sched_getaffinity(0)) // local_world))
    else:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    runtime = Runtime(device, choose_precision(params.precision, device), rank, world_size)
    if world_size == 1:
        yield runtime
        return
    backend = process_group_backend(device, params.ranks_per_gpu)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield runtime
    finally:
        dist.destroy_process_group()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors live (the CPU for a model without any)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
