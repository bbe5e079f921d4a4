"""torchrun support: one process per GPU (or gloo on CPU); only rank 0 writes and reports."""
import datetime
import os

import torch
import torch.distributed as torch_dist

from ..events import EngineError


class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        if name in (None, "", "auto"):
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"device {name} requested but no CUDA GPU is available")
            if self.enabled:
                torch.cuda.set_device(self.local_rank)
                return torch.device("cuda", self.local_rank)
        return torch.device(name)

    def start(self, device: torch.device) -> None:
        if self.enabled and not torch_dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            # rank 0 validates and packs while the others wait: allow for it
            torch_dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when any rank saw the flag (all stop on the same step)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], device=device, dtype=torch.float64)
        torch_dist.all_reduce(t)
        return t.item() / self.world

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def wrap(self, model, device: torch.device, find_unused: bool = False):
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def stop(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
