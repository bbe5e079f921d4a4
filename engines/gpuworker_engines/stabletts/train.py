"""The `train` command: fine-tune a base model (or, when asked, train from scratch)
on a dataset folder, with exact resume.

Top-down: run() sets up a Run (the data, the model, the optimizer, where a resume left
off), takes the optimizer steps of each epoch (train_epoch, train_step; training.py:
the same recipe on 1 or N processes), ends each epoch with validation, metrics, the
best model and the periodic resumable checkpoint (end_of_epoch), and done() writes the
final model. Each micro-batch's random draws are seeded from (seed, step, its place in
the step) and the batch order from (seed, epoch): a resumed run repeats a straight run
exactly.
"""
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .. import checkpoint, dataset, events, training
from ..events import EngineError, Interrupted
from ..metrics import MetricsLog
from . import ckpt, data
from .ckpt import Meta
from .config import TUNABLE, ModelConfig, TrainConfig
from .frontend import choose, describe_unmapped
from .model import StableTTS
from .panel import TrainingMetrics

LOSSES = ("duration", "prior", "flow")


def starting_model(tc: TrainConfig, texts: list[str]) -> tuple[StableTTS, Meta, dict | None]:
    """(model, meta, resumable state or None) from resume, a base, or from scratch."""
    if tc.resume:
        state, model, meta = ckpt.read_resumable(tc.resume)
        return model, meta, state
    if tc.base_checkpoint and tc.from_scratch:
        events.warning(f"from_scratch: the base {tc.base_checkpoint} is not used")
    elif tc.base_checkpoint:
        base, base_meta = ckpt.load_model(tc.base_checkpoint)
        ignored = sorted(set(tc.model) - set(TUNABLE))
        if ignored:
            events.warning(f"model keys {ignored} ignored: the architecture comes from the base")
        cfg = ModelConfig.from_dict({k: v for k, v in tc.model.items() if k in TUNABLE},
                                    base_meta.config)
        fe = choose(tc.frontend, texts, base_meta.frontend)
        model = StableTTS(cfg, len(base_meta.frontend))
        model.load_state_dict(base.state_dict(), strict=True)
        torch.manual_seed(tc.seed)  # the same new embedding rows on every rank
        model.extend_vocab(len(fe))
        if len(fe) > len(base_meta.frontend):
            events.log(f"fine-tune: {len(fe) - len(base_meta.frontend)} new symbol(s): "
                       + "".join(fe.symbols[len(base_meta.frontend):]))
        origin = "published" if base_meta.published else "fine-tuned"
        return model, Meta(cfg, fe, base_meta.size, origin, published=False), None
    if not (tc.from_scratch or tc.size == "tiny"):
        raise EngineError(
            f"size {tc.size} fine-tunes a base model and none was given: set the operator's "
            f"{ckpt.BASE_SETTING} to the published checkpoint_0.pt (or a hf:// reference), "
            "or the job's model.base_checkpoint; model.from_scratch: true trains from scratch")
    cfg = tc.model_config()
    fe = choose(tc.frontend, texts, None)
    torch.manual_seed(tc.seed)  # the same initial weights on every rank
    return StableTTS(cfg, len(fe)), Meta(cfg, fe, tc.size, "scratch", published=False), None


DECAY = "cosine"  # after the warmup, half a cosine down to learning_rate * min_lr_ratio


@dataclass
class Run:
    """A training run: what setup() builds, and where the steps have got to."""
    tc: TrainConfig
    procs: training.Processes
    model: StableTTS
    net: torch.nn.Module  # the model, or its DDP wrapper
    meta: Meta
    opt: torch.optim.Optimizer
    amp: object
    plan: training.Plan
    train_set: list
    val_set: list
    unmapped: dict
    split_file: str
    total: int
    hp: dict  # the hyperparameters used, as the result reports them
    # the position (a resumable checkpoint keeps it)
    step: int = 0
    epoch: int = 0
    batch_pos: int = 0  # micro-batches of the epoch done, over all processes
    best_val: float = math.inf
    best_epoch: int = 0
    sums: dict = field(default_factory=lambda: {k: 0.0 for k in LOSSES})  # of the epoch's steps
    count: int = 0
    last_resumable: str | None = None
    metrics: MetricsLog | None = None
    panel: TrainingMetrics | None = None
    progress: training.Progress | None = None

    @property
    def device(self) -> torch.device:
        return self.procs.torch_device

    def lr(self, step: int) -> float:
        tc = self.tc
        return training.lr_at(step, tc.learning_rate, tc.warmup_steps, self.total, DECAY, tc.min_lr_ratio)


def run(config, stop) -> dict:
    r = setup(TrainConfig.of(config), stop)
    while r.epoch < r.tc.epochs:
        if not train_epoch(r, stop):
            break  # stop_at_step
        end_of_epoch(r)
    return done(r)


def setup(tc: TrainConfig, stop) -> Run:
    procs = training.Processes()
    device = procs.start(tc.device)
    os.makedirs(tc.output_dir, exist_ok=True)
    items = dataset.load(tc.dataset, need_audio=True, need_text=True)
    model, meta, resume = starting_model(tc, [it.text for it in items])
    model.to(device)
    cfg, fe = meta.config, meta.frontend

    cache_dir = os.path.join(tc.output_dir, "mel_cache")
    if procs.main:  # the other processes then read the cache it wrote
        examples, unmapped = data.prepare(items, cfg, fe, cache_dir, tc.max_duration, stop)
        if unmapped:
            events.warning(describe_unmapped(unmapped, fe.kind))
    procs.barrier()
    if not procs.main:
        examples, unmapped = data.prepare(items, cfg, fe, cache_dir, tc.max_duration, stop)
    train_set, val_set = data.split(examples, tc.val_split, tc.seed,
                                    resume.get("val_ids") if resume else None)
    split_file = os.path.join(tc.output_dir, "split.json")
    if procs.main:
        data.write_split(split_file, train_set, val_set)

    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    plan = training.Plan(tc.batch_size, tc.gradient_accumulation_steps, procs.world)
    n_batches = len(_epoch_batches(tc, train_set, 0))
    hp = {**plan.hyperparameters(n_batches, tc.epochs), "learning_rate": tc.learning_rate,
          "warmup_steps": tc.warmup_steps, "min_lr_ratio": tc.min_lr_ratio, "decay": DECAY,
          "weight_decay": tc.weight_decay, "epochs": tc.epochs}
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    r = Run(tc, procs, model, procs.wrap(model), meta, opt, amp, plan, train_set, val_set, unmapped,
            split_file, hp["total_steps"], hp, last_resumable=tc.resume)
    if resume is not None:
        with checkpoint.blamed(tc.resume):
            opt.load_state_dict(resume["optimizer"])
            r.step, r.epoch, r.batch_pos = resume["step"], resume["epoch"], resume["batch_in_epoch"]
            r.best_val, r.best_epoch = resume["best_val_loss"], resume["best_epoch"]
            r.sums, r.count = resume["epoch_sums"], resume["epoch_count"]  # of the interrupted epoch
            checkpoint.set_rng_state(resume["rng"])
            counters = (r.step, r.epoch, r.batch_pos, r.best_epoch, r.count)
            if not all(type(n) is int and n >= 0 for n in counters) or not isinstance(r.best_val, float) \
                    or not isinstance(r.sums, dict) or set(r.sums) != set(LOSSES):
                raise ValueError("its position or epoch sums are malformed")
    if procs.main:
        resumed_at = r.epoch if resume else None
        r.metrics = MetricsLog(tc.output_dir, resume_epoch=resumed_at)
        r.panel = TrainingMetrics(tc.output_dir, LOSSES, resume_epoch=resumed_at)
    r.progress = training.Progress(tc.epochs, r.total, r.step, tc.progress_every_steps, procs.main)
    n_params = sum(p.numel() for p in model.parameters())
    events.log(f"train: {len(train_set)} train / {len(val_set)} val items, frontend {fe.kind}, "
               f"{len(fe)} symbols, {n_params / 1e6:.1f} M params from {meta.origin}, {device}, "
               f"{procs.world} process(es), effective batch {plan.effective_batch}, "
               f"{hp['steps_per_epoch']} steps/epoch, from step {r.step}")
    if stop:
        raise Interrupted(f"stopped before training started; resume from {save_resumable(r)}")
    return r


def _epoch_batches(tc: TrainConfig, train_set: list, epoch: int) -> list[list[int]]:
    """The epoch's micro-batches, the same list in every process."""
    return data.epoch_batches([e.frames for e in train_set], tc.batch_size, tc.seed, epoch, tc.bucket_size)


def train_epoch(r: Run, stop) -> bool:
    """The epoch's optimizer steps from where the run is; False when stop_at_step ends the run."""
    tc = r.tc
    batches = _epoch_batches(tc, r.train_set, r.epoch)
    shares = r.plan.shares(batches, r.procs.rank)
    r.net.train()
    for i in range(-(-r.batch_pos // r.plan.micro_per_step), len(shares)):
        parts, lr = train_step(r, shares[i])
        r.batch_pos = min((i + 1) * r.plan.micro_per_step, len(batches))
        for k in LOSSES:
            r.sums[k] += parts[k]
        r.count += 1
        r.progress.step(r.epoch, r.step, parts, lr)
        total_loss = sum(parts.values())
        if not math.isfinite(total_loss):
            raise EngineError(f"training diverged at step {r.step} (loss {total_loss}); "
                              "try a lower learning_rate")
        if r.procs.any(bool(stop)):
            raise Interrupted(f"stopped at step {r.step}; resume from {save_resumable(r)}")
        if tc.stop_at_step is not None and r.step >= tc.stop_at_step:
            return False
    return True


def train_step(r: Run, micro: list[training.Micro]) -> tuple[dict, float]:
    """One optimizer step over this process's micro-batches: (mean losses, learning rate)."""
    tc = r.tc
    lr = r.lr(r.step)
    training.set_lr(r.opt, lr)
    r.opt.zero_grad(set_to_none=True)

    def forward(batch: list[int]) -> dict:
        x, xl, y, yl = data.collate([r.train_set[j] for j in batch], r.device)
        ref, rl = data.style_windows(y, yl)
        with r.amp:
            return r.net(x, xl, y, yl, ref, rl)

    parts = training.accumulate(r.net, micro, r.procs, forward, tc.seed, r.step)
    torch.nn.utils.clip_grad_norm_(r.model.parameters(), tc.grad_clip)
    r.opt.step()
    r.step += 1
    return {k: parts[k] for k in LOSSES}, lr


def end_of_epoch(r: Run) -> None:
    """Validation, metrics, the best model, the periodic resumable checkpoint."""
    tc = r.tc
    r.epoch, r.batch_pos = r.epoch + 1, 0
    train_losses = {k: v / max(r.count, 1) for k, v in r.sums.items()}
    r.sums, r.count = {k: 0.0 for k in LOSSES}, 0
    val = validate(r.model, r.val_set, tc, r.device, r.amp) if r.val_set else {}
    score = val.get("loss", sum(train_losses.values()))
    if r.procs.main:
        r.metrics.add(epoch=r.epoch, step=r.step, lr=r.lr(max(r.step - 1, 0)),
                      loss=sum(train_losses.values()), **train_losses,
                      **{f"val_{k}": v for k, v in val.items()})
        r.panel.add(r.epoch, train_losses, val)
    r.progress.epoch_end(r.epoch, r.step, train_losses, val)
    if score < r.best_val:
        r.best_val, r.best_epoch = score, r.epoch
        save(r, "best", epoch=r.epoch, step=r.step, val_loss=score)
    if r.epoch % tc.save_every_epochs == 0 and r.epoch < tc.epochs:
        save_resumable(r)


def done(r: Run) -> dict:
    """The last resumable checkpoint, the final model and what the run reports."""
    save_resumable(r)
    fe = r.meta.frontend
    result = {"epochs_completed": r.epoch, "steps": r.step, "best_epoch": r.best_epoch,
              "best_val_loss": r.best_val if math.isfinite(r.best_val) else None,
              "resumable": r.last_resumable, "frontend": fe.kind, "n_symbols": len(fe),
              "unmapped_characters": r.unmapped, "parameters": sum(p.numel() for p in r.model.parameters()),
              "base": r.meta.origin, "split_file": r.split_file, "hyperparameters": r.hp}
    if r.procs.main:
        paths = _model_paths(r.tc)
        save(r, "final", epoch=r.epoch, step=r.step)
        if not os.path.exists(paths["best"]):  # stopped before the first epoch ended
            save(r, "best", epoch=r.epoch, step=r.step)
        m = r.metrics
        result.update(best_model=paths["best"], final_model=paths["final"],
                      kdaip_checkpoint=ckpt.kdaip_name(paths["best"]),
                      best_model_meta=ckpt.sidecar_path(paths["best"]),
                      final_model_meta=ckpt.sidecar_path(paths["final"]),
                      metrics_csv=m.path if m.rows else None,
                      training_metrics_csv=r.panel.path if r.panel.rows else None,
                      loss_png=m.plot(["loss", "val_loss"] if r.val_set else ["loss"],
                                      "StableTTS training") if m.rows else None)
    r.procs.stop()
    return result


def _model_paths(tc: TrainConfig) -> dict[str, str]:
    return {"best": os.path.join(tc.output_dir, "best_model.pt"),
            "final": os.path.join(tc.output_dir, "final_model.pt")}


def save(r: Run, kind: str, **info) -> None:
    """The best or final model (rank 0): a bare state_dict with its sidecar."""
    if r.procs.main:
        m = r.meta
        path = _model_paths(r.tc)[kind]
        ckpt.save_model(r.model, Meta(m.config, m.frontend, m.size, m.origin, {"kind": kind, **info},
                                      published=False), path)
        if kind == "best":  # the name KdaiP's tools continue from
            ckpt.link_kdaip_name(path, info["epoch"])
        events.emit("checkpoint", path=path, epoch=info.get("epoch"), step=r.step, kind=kind)


def save_resumable(r: Run) -> str:
    """A checkpoint to resume exactly from (rank 0 writes it); its path on every rank."""
    path = os.path.join(r.tc.output_dir, "checkpoints", f"resume_e{r.epoch:05d}_s{r.step:08d}.pt")
    if r.procs.main:
        ckpt.save_resumable(path, r.model, r.meta, optimizer=r.opt.state_dict(), step=r.step,
                            epoch=r.epoch, batch_in_epoch=r.batch_pos, rng=checkpoint.rng_state(),
                            best_val_loss=r.best_val, best_epoch=r.best_epoch,
                            val_ids=[e.id for e in r.val_set], epoch_sums=dict(r.sums),
                            epoch_count=r.count, train_config=r.tc.to_dict())
        checkpoint.rotate(os.path.dirname(path), "resume_", r.tc.keep_checkpoints)
        events.emit("checkpoint", path=path, epoch=r.epoch, step=r.step, kind="resumable")
    r.last_resumable = path
    return path


@torch.no_grad()
def validate(model: StableTTS, val_set, tc: TrainConfig, device, amp) -> dict:
    """Mean losses over the validation items with fixed noise and reference windows, so
    epochs compare fairly (a private generator leaves the training RNG stream untouched)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(tc.seed)
    sums, n = {k: 0.0 for k in LOSSES}, 0
    for s in range(0, len(val_set), tc.batch_size):
        part = val_set[s:s + tc.batch_size]
        x, xl, y, yl = data.collate(part, device)
        ref, rl = data.style_windows(y, yl, gen)
        with amp:
            losses = model(x, xl, y, yl, ref, rl, generator=gen)
        for k in LOSSES:
            sums[k] += losses[k].item() * len(part)
        n += len(part)
    model.train()
    out = {k: v / n for k, v in sums.items()}
    out["loss"] = sum(out.values())
    return out
