"""The `train` command: fine-tune a base model (or, when asked, train from scratch)
on a dataset folder, with exact resume.

Everything random in a step is seeded from (seed, rank, step), and the batch
order from (seed, epoch), so a resumed run repeats a straight run exactly.
"""
import math
import os
import sys
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist

from .. import checkpoint, dataset, events
from ..events import EngineError, Interrupted
from ..metrics import MetricsLog
from . import ckpt, data
from .ckpt import Meta
from .config import TUNABLE, ModelConfig, TrainConfig
from .frontend import choose, describe_unmapped
from .model import StableTTS
from .panel import TrainingMetrics

LOSSES = ("duration", "prior", "flow")


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to base * min_ratio at `total` steps."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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


def run(config: dict, stop) -> dict:
    tc = TrainConfig.from_dict(config)
    rank, world = _init_distributed()
    if rank > 0:
        sys.stdout = sys.stderr  # only rank 0 speaks the protocol
    device = _device(tc.device)
    os.makedirs(tc.output_dir, exist_ok=True)
    items = dataset.load(tc.dataset, need_audio=True, need_text=True)
    model, meta, resume = starting_model(tc, [it.text for it in items])
    model.to(device)
    cfg, fe = meta.config, meta.frontend

    cache_dir = os.path.join(tc.output_dir, "mel_cache")
    if rank == 0:
        examples, unmapped = data.prepare(items, cfg, fe, cache_dir, tc.max_duration, stop)
        if unmapped:
            events.warning(describe_unmapped(unmapped, fe.kind))
    if world > 1:
        dist.barrier()
        if rank > 0:
            examples, unmapped = data.prepare(items, cfg, fe, cache_dir, tc.max_duration, stop)
    train_set, val_set = data.split(examples, tc.val_split, tc.seed,
                                    resume.get("val_ids") if resume else None)
    split_file = os.path.join(tc.output_dir, "split.json")
    if rank == 0:
        data.write_split(split_file, train_set, val_set)
    frames = [e.frames for e in train_set]

    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    step, epoch, batch_pos = 0, 0, 0
    best_val, best_epoch = math.inf, 0
    sums, count = {k: 0.0 for k in LOSSES}, 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        step, epoch, batch_pos = resume["step"], resume["epoch"], resume["batch_in_epoch"]
        best_val, best_epoch = resume["best_val_loss"], resume["best_epoch"]
        sums, count = resume["epoch_sums"], resume["epoch_count"]  # of the interrupted epoch
        checkpoint.set_rng_state(resume["rng"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    micro_per_epoch = len(data.epoch_batches(frames, tc.batch_size, tc.seed, 0, tc.bucket_size,
                                             rank, world))
    steps_per_epoch = math.ceil(micro_per_epoch / tc.gradient_accumulation_steps)
    total = tc.epochs * steps_per_epoch
    ckpt_dir = os.path.join(tc.output_dir, "checkpoints")
    paths = {"best": os.path.join(tc.output_dir, "best_model.pt"),
             "final": os.path.join(tc.output_dir, "final_model.pt")}
    resumed_at = epoch if resume else None
    metrics = MetricsLog(tc.output_dir, resume_epoch=resumed_at) if rank == 0 else None
    panel = TrainingMetrics(tc.output_dir, LOSSES, resume_epoch=resumed_at) if rank == 0 else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    eta = events.ETA(total, step)
    pace = events.Pace(tc.progress_every_steps)
    n_params = sum(p.numel() for p in model.parameters())
    events.log(f"train: {len(train_set)} train / {len(val_set)} val items, frontend {fe.kind}, "
               f"{len(fe)} symbols, {n_params / 1e6:.1f} M params from {meta.origin}, {device}, "
               f"world {world}, {steps_per_epoch} steps/epoch, from step {step}")

    def save(kind: str, path: str, **info) -> None:
        if rank == 0:
            ckpt.save_model(model, Meta(cfg, fe, meta.size, meta.origin,
                                        {"kind": kind, **info}, published=False), path)
            if kind == "best":  # the name KdaiP's tools continue from
                ckpt.link_kdaip_name(path, info["epoch"])
            events.emit("checkpoint", path=path, epoch=info.get("epoch"), step=step, kind=kind)

    def save_resumable(ep: int, pos: int) -> str:
        path = os.path.join(ckpt_dir, f"resume_e{ep:05d}_s{step:08d}.pt")
        if rank == 0:
            ckpt.save_resumable(path, model, meta, optimizer=opt.state_dict(), step=step,
                                epoch=ep, batch_in_epoch=pos, rng=checkpoint.rng_state(),
                                best_val_loss=best_val, best_epoch=best_epoch,
                                val_ids=[e.id for e in val_set], epoch_sums=dict(sums),
                                epoch_count=count, train_config=vars(tc))
            checkpoint.rotate(ckpt_dir, "resume_", tc.keep_checkpoints)
            events.emit("checkpoint", path=path, epoch=ep, step=step, kind="resumable")
        return path

    last_resumable = tc.resume
    finished = True
    lr = lr_at(step, tc.learning_rate, tc.warmup_steps, total, tc.min_lr_ratio)
    if stop:
        raise Interrupted(f"stopped before training started; resume from {save_resumable(epoch, batch_pos)}")
    while epoch < tc.epochs:
        batches = data.epoch_batches(frames, tc.batch_size, tc.seed, epoch, tc.bucket_size, rank, world)
        net.train()
        for pos in range(batch_pos, len(batches), tc.gradient_accumulation_steps):
            group = batches[pos:pos + tc.gradient_accumulation_steps]
            lr = lr_at(step, tc.learning_rate, tc.warmup_steps, total, tc.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            torch.manual_seed(_step_seed(tc.seed, rank, step))
            opt.zero_grad(set_to_none=True)
            parts = {k: 0.0 for k in LOSSES}
            for i, b in enumerate(group):
                x, xl, y, yl = data.collate([train_set[j] for j in b], device)
                ref, rl = data.style_windows(y, yl)
                sync = world == 1 or i == len(group) - 1
                with (nullcontext() if sync else net.no_sync()), amp:
                    losses = net(x, xl, y, yl, ref, rl)
                    loss = sum(losses.values()) / len(group)
                loss.backward()
                for k in LOSSES:
                    parts[k] += losses[k].item() / len(group)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            parts = _mean_over_ranks(parts, world, device)
            batch_pos = pos + len(group)
            for k in LOSSES:
                sums[k] += parts[k]
            count += 1
            total_loss = sum(parts.values())
            left = eta(step)
            events.log(f"epoch {epoch + 1}/{tc.epochs} step {step}/{total} loss {total_loss:.4f} "
                       + " ".join(f"{k} {v:.4f}" for k, v in parts.items())
                       + f" lr {lr:.2e} eta {_fmt_eta(left)}")
            if pace.due(step):
                events.emit("progress", epoch=epoch + 1, epochs=tc.epochs, step=step, steps=total,
                            loss=total_loss, losses=parts, lr=lr, eta_s=left)
            if not math.isfinite(total_loss):
                raise EngineError(f"training diverged at step {step} (loss {total_loss}); "
                                  "try a lower learning_rate")
            if _agreed(bool(stop), world, device):
                last_resumable = save_resumable(epoch, batch_pos)
                raise Interrupted(f"stopped at step {step}; resume from {last_resumable}")
            if tc.stop_at_step is not None and step >= tc.stop_at_step:
                finished = False
                break
        if not finished:
            break

        # end of epoch: validation, metrics, best model, periodic resumable checkpoint
        epoch += 1
        batch_pos = 0
        train_losses = {k: v / max(count, 1) for k, v in sums.items()}
        sums, count = {k: 0.0 for k in LOSSES}, 0
        val = validate(model, val_set, tc, device, amp) if val_set else {}
        score = val.get("loss", sum(train_losses.values()))
        if rank == 0:
            metrics.add(epoch=epoch, step=step, lr=lr, loss=sum(train_losses.values()),
                        **train_losses, **{f"val_{k}": v for k, v in val.items()})
            panel.add(epoch, train_losses, val)
            events.emit("progress", epoch=epoch, epochs=tc.epochs, step=step, steps=total,
                        loss=sum(train_losses.values()), losses=train_losses, val=val, lr=lr,
                        eta_s=eta(step))
        if score < best_val:
            best_val, best_epoch = score, epoch
            save("best", paths["best"], epoch=epoch, step=step, val_loss=score)
        if epoch % tc.save_interval == 0 and epoch < tc.epochs:
            last_resumable = save_resumable(epoch, 0)

    last_resumable = save_resumable(epoch, batch_pos)
    result = {"epochs_completed": epoch, "steps": step, "best_epoch": best_epoch,
              "best_val_loss": best_val if math.isfinite(best_val) else None,
              "resumable": last_resumable, "frontend": fe.kind, "n_symbols": len(fe),
              "unmapped_characters": unmapped, "parameters": n_params, "base": meta.origin,
              "split_file": split_file}
    if rank == 0:
        save("final", paths["final"], epoch=epoch, step=step)
        if not os.path.exists(paths["best"]):  # stopped before the first epoch ended
            save("best", paths["best"], epoch=epoch, step=step)
        result.update(best_model=paths["best"], final_model=paths["final"],
                      kdaip_checkpoint=ckpt.kdaip_name(paths["best"]),
                      best_model_meta=ckpt.sidecar_path(paths["best"]),
                      final_model_meta=ckpt.sidecar_path(paths["final"]),
                      metrics_csv=metrics.path if metrics.rows else None,
                      training_metrics_csv=panel.path if panel.rows else None,
                      loss_png=metrics.plot(["loss", "val_loss"] if val_set else ["loss"],
                                            "StableTTS training") if metrics.rows else None)
    if world > 1:
        dist.destroy_process_group()
    return result


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


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _mean_over_ranks(values: dict, world: int, device) -> dict:
    if world == 1:
        return values
    t = torch.tensor(list(values.values()), device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world for k, v in zip(values, t.tolist())}


def _agreed(flag: bool, world: int, device) -> bool:
    """All ranks stop at the same step if any of them was asked to stop."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _init_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_rank(), world


def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise EngineError("device cuda requested but no GPU is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _fmt_eta(s) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
