"""What every trainer shares: the processes of a run, how an epoch's batches become
optimizer steps on 1 or N processes, the learning-rate schedule, the seed of each
micro-batch, and the progress a person sees.

Multi-GPU means the same recipe. A job's batch_size x gradient_accumulation_steps is
the effective batch of ONE optimizer step, whatever the process count N:

  - every process lists the epoch's batches alike, and the list is cut into
    optimizer steps as one process would take them;
  - the micro-batches of a step are dealt to the N processes in turn, so each
    accumulates gradient_accumulation_steps / N of them. When N does not divide the
    accumulation each accumulates ceil(gradient_accumulation_steps / N): a step then
    holds the next multiple of N micro-batches, and the run reports the effective
    batch it really used;
  - the learning rate is a pure function of the optimizer step, and an epoch has as
    many optimizer steps on N processes as on one (N dividing the accumulation).

Each micro-batch's loss is weighted N / (micro-batches in the step) and DDP averages
gradients over the N processes, so a step's gradient is the mean over its
micro-batches, as in one process. A process left without a micro-batch in an epoch's
short last step runs the step's first one with weight 0, so that it still joins the
gradient all-reduce. Every micro-batch is seeded from (seed, step, its place in the
step): its random draws do not depend on which process runs it, nor on a resume.

Only rank 0 speaks the protocol: the other ranks' events go to stderr.
"""
import datetime
import math
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist

from . import events
from .events import EngineError


def pick_device(name: str, index: int = 0) -> torch.device:
    """The device a `device` setting (auto | cpu | cuda) names; index: the GPU under torchrun."""
    if name == "cuda" or (name in (None, "", "auto") and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise EngineError("device cuda requested but no GPU is available")
        return torch.device("cuda", index)
    return torch.device("cpu")


class Processes:
    """The processes of a run: one per GPU under torchrun (gloo on the CPU), or just this one."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.torch_device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device_name: str) -> torch.device:
        """The device of this process; joins the process group and silences ranks > 0."""
        self.torch_device = pick_device(device_name, self.local_rank)
        if self.torch_device.type == "cuda":
            torch.cuda.set_device(self.torch_device)
        if self.enabled and not torch_dist.is_initialized():
            backend = "nccl" if self.torch_device.type == "cuda" else "gloo"
            # rank 0 prepares data, validates and packs while the others wait: allow for it
            torch_dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        if not self.main:
            events.speak_on_stderr()
        return self.torch_device

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank saw the flag (all stop on the same step)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.torch_device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return values
        t = torch.tensor(list(values.values()), device=self.torch_device, dtype=torch.float64)
        torch_dist.all_reduce(t)
        return dict(zip(values, t.tolist()))

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def wrap(self, model, find_unused: bool = False):
        if not self.enabled:
            return model
        ids = [self.torch_device.index] if self.torch_device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                         find_unused_parameters=find_unused)

    def stop(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


@dataclass(frozen=True)
class Micro:
    """One micro-batch of an optimizer step, as one process runs it."""
    batch: object
    index: int  # its place in the step: seeds its random draws
    weight: float  # of its loss; 0 for a process that only joins the all-reduce


@dataclass(frozen=True)
class Plan:
    """How optimizer steps are made of micro-batches (see the module's docstring)."""
    batch_size: int
    accumulation: int  # micro-batches per optimizer step the job asked for, over all processes
    processes: int = 1

    @property
    def per_process(self) -> int:
        return -(-self.accumulation // self.processes)

    @property
    def micro_per_step(self) -> int:
        return self.per_process * self.processes

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.micro_per_step

    def steps(self, n_batches: int) -> int:
        return -(-n_batches // self.micro_per_step)

    def shares(self, batches: list, rank: int) -> list[list[Micro]]:
        """The epoch's batches cut into optimizer steps: rank's micro-batches of each."""
        out = []
        for start in range(0, len(batches), self.micro_per_step):
            group = batches[start:start + self.micro_per_step]
            weight = self.processes / len(group)
            mine = [Micro(group[i], i, weight) for i in range(rank, len(group), self.processes)]
            out.append(mine or [Micro(group[0], 0, 0.0)])
        return out

    def hyperparameters(self, n_batches: int, epochs: int) -> dict:
        """As a result reports them: gradient_accumulation_steps is the job's (over all processes),
        as the config key of that name; accumulation_per_process what each process ran."""
        return {"batch_size": self.batch_size, "gradient_accumulation_steps": self.accumulation,
                "accumulation_per_process": self.per_process, "processes": self.processes,
                "effective_batch": self.effective_batch,
                "steps_per_epoch": self.steps(n_batches), "total_steps": epochs * self.steps(n_batches)}


def lr_at(step: int, base: float, warmup: int, total: int, decay: str, min_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (from 0): linear warmup over `warmup`
    steps (0: none), then `decay` to base * min_ratio at `total` steps:
    "cosine" (half a cosine) or "linear"."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "cosine":
        left = 0.5 * (1 + math.cos(math.pi * progress))
    elif decay == "linear":
        left = 1.0 - progress
    else:
        raise ValueError(f"unknown decay {decay!r}")
    return base * (min_ratio + (1 - min_ratio) * left)


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def seed_micro_batch(seed: int, step: int, index: int) -> None:
    """Seeds every generator a micro-batch draws from (dropout, noise, masking)."""
    s = int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def accumulate(net, shares: list[Micro], procs: Processes, forward, seed: int, step: int,
               backward=torch.Tensor.backward) -> dict[str, float]:
    """Forward and backward of this process's micro-batches of one optimizer step; DDP
    reduces gradients on the last. forward(batch) -> {name: loss tensor}, minimised as
    their sum. Returns the step's losses: the mean over all its micro-batches."""
    sums: dict[str, float] = {}
    for i, m in enumerate(shares):
        seed_micro_batch(seed, step, m.index)
        sync = nullcontext() if i == len(shares) - 1 or not procs.enabled else net.no_sync()
        with sync:
            losses = forward(m.batch)
            backward(sum(losses.values()) * m.weight)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item() * m.weight / procs.world
    return procs.sum(sums)


class Progress:
    """What a person sees: one log line per optimizer step, a progress event every
    `every` steps (or few seconds), and one at each epoch's end; with the ETA."""

    def __init__(self, epochs: int, total: int, done: int, every: int, main: bool = True):
        self.epochs, self.total, self.main = epochs, total, main
        self.eta, self.pace = events.ETA(total, done), events.Pace(every)

    def step(self, epoch: int, step: int, losses: dict, lr: float) -> None:
        """After optimizer step `step` of epoch `epoch` (from 0)."""
        loss, left = sum(losses.values()), self.eta(step)
        if self.main:
            parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items()) if len(losses) > 1 else ""
            events.log(f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total} loss {loss:.4f} "
                       + (parts + " " if parts else "") + f"lr {lr:.2e} eta {fmt_eta(left)}")
        if self.pace.due(step) and self.main:
            events.emit("progress", epoch=epoch + 1, epochs=self.epochs, step=step, steps=self.total,
                        loss=loss, losses=losses, lr=lr, eta_s=left)

    def epoch_end(self, epochs_done: int, step: int, losses: dict, val: dict) -> None:
        if self.main:
            events.emit("progress", epoch=epochs_done, epochs=self.epochs, step=step, steps=self.total,
                        loss=sum(losses.values()), losses=losses, val=val, eta_s=self.eta(step))


def fmt_eta(seconds) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
