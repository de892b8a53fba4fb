"""Distributed data parallel set-up from ``torchrun``'s environment (WORLD_SIZE, RANK, LOCAL_RANK).

The same ``medseg train`` command runs alone or under ``torchrun --nproc_per_node N -m medseg train``:
NCCL on CUDA, gloo on CPU. Only rank 0 writes files; each rank draws different batches (its rank is
part of every batch seed); gradients are averaged by DDP, so the weights stay identical on all ranks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """Rank facts from the environment torchrun sets (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device) -> None:
    """Start the process group (NCCL for CUDA devices, gloo otherwise) when running distributed."""
    import torch.distributed as dist

    if not info.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def shutdown(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(values: list[float], info: DistInfo, device) -> list[float]:
    """Element-wise mean of ``values`` over ranks (the values themselves when alone)."""
    if not info.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def all_sum(tensor, info: DistInfo):
    """In-place sum of ``tensor`` over ranks; returns it."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def all_ok(ok: bool, info: DistInfo, device) -> bool:
    """True when every rank reports ``ok`` (used after rank 0 writes a checkpoint)."""
    if not info.enabled:
        return ok
    import torch
    import torch.distributed as dist

    t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def broadcast_buffers(module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, 0)


def state_hash(module) -> str:
    """SHA-256 of a module's state dict (names, shapes and bytes): equal weights ⇔ equal hashes."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
