"""Fine-tunes a CTC model on the dataset; `finish.py` then adds post-correction and packs it.

Top-down: train() sets up data, model and optimiser (fresh or from a resumable
checkpoint), runs the step loop with validation at each epoch end, keeps the
best model by validation CER, and hands over to finish.finish().
"""
import contextlib
import math
import os
import shutil

import numpy as np
import torch
from transformers import (SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2Config,
                          Wav2Vec2FeatureExtractor)

from .. import checkpoint, events
from ..events import EngineError
from ..metrics import MetricsLog
from . import data, finish, scoring, vocab as vocab_mod
from .config import TrainConfig
from .dist import Dist
from .model import (CLASSES, base_vocab, load_base, output_lengths, resolve_base, save_trained,
                    tokenizer_from_vocab)

CONFIGS = {"w2v2bert": Wav2Vec2BertConfig, "wav2vec2": Wav2Vec2Config}
EXTRACTORS = {"w2v2bert": SeamlessM4TFeatureExtractor, "wav2vec2": Wav2Vec2FeatureExtractor}


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup to `base`, then linear decay to zero at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


def train(config: dict, stop) -> dict:
    cfg = TrainConfig.from_dict(config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = Dist()
    device = dist.device(cfg.device)
    dist.start(device)
    if not dist.main:
        events.emit = _silent  # one process speaks for the run: the other ranks' events are duplicates
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = os.path.abspath(cfg.output_dir)
    ckpt_dir = os.path.join(out, "checkpoints")
    best_dir = os.path.join(out, "best")
    if dist.main:
        os.makedirs(ckpt_dir, exist_ok=True)

    examples, skipped = data.prepare(cfg.dataset, cfg.text_normalization, cfg.max_duration_s)
    state = _load_resume(cfg.resume) if cfg.resume else None
    if state:
        vocab, arch = state["vocab"], state["arch"]
        model = CLASSES[arch](CONFIGS[arch].from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        fe = EXTRACTORS[arch].from_dict(state["fe_config"])
    else:
        vocab, dropped = vocab_mod.build([e.text for e in examples], cfg.min_char_count)
        if dropped:
            events.warning(f"{len(dropped)} rare characters map to [UNK]: {''.join(dropped)}")
        src = resolve_base(cfg) if cfg.size != "tiny" else None
        old = base_vocab(src) if src else None
        if old:  # continuing from an earlier fine-tune: its letters keep their ids and head rows
            vocab = vocab_mod.extend(old, vocab)
            events.log(f"base vocab {len(old)} tokens, {len(vocab) - len(old)} new")
        model, fe, arch = load_base(cfg, len(vocab), src=src, keep_head=len(old) if old else 0)
    vocab_path = os.path.join(out, "vocab.json")
    if dist.main:
        vocab_mod.save(vocab, vocab_path)
    dist.barrier()
    tok = tokenizer_from_vocab(vocab_path)
    fps = data.frames_per_second(arch, bool(getattr(model.config, "add_adapter", False)))
    examples, short = data.drop_too_short(examples, tok, fps)
    skipped += short
    train_ex, val_ex = data.split(examples, cfg.val_split, cfg.seed)
    events.log(f"{arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
               f"vocab {len(vocab)}, {len(train_ex)} train / {len(val_ex)} validation items, "
               f"device {device}, world {dist.world}")

    if arch == "wav2vec2":
        model.freeze_feature_encoder()  # the XLS-R/MMS recipe keeps the CNN front end fixed
    amp = _amp_dtype(cfg.precision, device)
    use_ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device.type == "cuda"
    if use_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    net = dist.wrap(model, device, find_unused=cfg.mask_time_prob > 0)

    durations = [e.duration for e in train_ex]
    n_batches = math.ceil(len(train_ex) / cfg.batch_size)
    n_local = n_batches // dist.world if dist.enabled else n_batches
    if n_local < 1:
        raise EngineError(f"too few training items ({len(train_ex)}) for {dist.world} processes")
    steps_per_epoch = math.ceil(n_local / cfg.gradient_accumulation_steps)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, min(cfg.warmup_steps, int(cfg.warmup_max_fraction * total)))

    step, epoch0, group0, loss_sum, loss_n = 0, 0, 0, 0.0, 0
    best = {"cer": None, "epoch": None, "wer": None}
    if state:
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch0, group0 = state["step"], state["epoch"], state["group"]
        per_group = cfg.batch_size * cfg.gradient_accumulation_steps
        was = state["config"]["batch_size"] * state["config"]["gradient_accumulation_steps"]
        if (state["config"]["batch_size"], state["config"]["gradient_accumulation_steps"]) != \
                (cfg.batch_size, cfg.gradient_accumulation_steps):
            # e.g. the worker's out-of-memory retry: carry on from about as many items into the epoch
            group0 = group0 * was // per_group
            events.warning(f"batch size changed on resume: continuing epoch {epoch0 + 1} at batch group {group0}")
        loss_sum, loss_n, best = state["loss_sum"], state["loss_n"], state["best"]
        checkpoint.set_rng_state(state["rng"])
        events.log(f"resumed from {cfg.resume} at step {step} (epoch {epoch0 + 1}, batch group {group0})")
    metrics = MetricsLog(out, resume_epoch=epoch0 if state else None) if dist.main else None
    collate = data.Collate(train_ex, fe, tok, arch)
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    eta = events.ETA(total, step)

    def save(epoch: int, group: int, kind: str = "resumable") -> str:
        path = os.path.join(ckpt_dir, f"resumable_step{step:08d}.pt")
        if dist.main:
            checkpoint.save_atomic({
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "group": group, "loss_sum": loss_sum, "loss_n": loss_n,
                "best": best, "rng": checkpoint.rng_state(), "vocab": vocab, "arch": arch,
                "model_config": model.config.to_dict(), "fe_config": fe.to_dict(),
                "config": cfg.to_dict()}, path)
            checkpoint.rotate(ckpt_dir, "resumable_", cfg.keep_checkpoints)
            events.emit("checkpoint", path=path, epoch=epoch, step=step, kind=kind)
        dist.barrier()
        return path

    for epoch in range(epoch0, cfg.epochs):
        batches = data.epoch_batches(durations, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        local = batches[dist.rank::dist.world][:n_local]
        groups = [local[i:i + cfg.gradient_accumulation_steps]
                  for i in range(0, len(local), cfg.gradient_accumulation_steps)]
        start = group0 if epoch == epoch0 else 0
        if start == 0:
            loss_sum, loss_n = 0.0, 0
        # a private generator keeps the loader from drawing on the global RNG (exact resume)
        batch_iter = iter(torch.utils.data.DataLoader(
            [b for g in groups[start:] for b in g], batch_size=None, collate_fn=collate,
            num_workers=workers, generator=torch.Generator().manual_seed(cfg.seed)))
        for gi in range(start, len(groups)):
            net.train()
            lr = lr_at(step, cfg.learning_rate, warmup, total)
            for g in opt.param_groups:
                g["lr"] = lr
            step_loss = 0.0
            for mi in range(len(groups[gi])):
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batch_iter).items()}
                last = mi == len(groups[gi]) - 1
                sync = contextlib.nullcontext() if last or not dist.enabled else net.no_sync()
                with sync, torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss = net(**batch).loss / len(groups[gi])
                scaler.scale(loss).backward()
                step_loss += loss.item()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            step_loss = dist.mean(step_loss, device)
            loss_sum, loss_n = loss_sum + step_loss, loss_n + 1
            left = eta(step)
            if dist.main:
                events.log(f"epoch {epoch + 1}/{cfg.epochs} step {step}/{total} loss {step_loss:.4f} "
                           f"lr {lr:.2e} eta {_fmt(left)}")
            if dist.main and (step % max(1, cfg.progress_every_steps) == 0):
                events.emit("progress", epoch=epoch + 1, epochs=cfg.epochs, step=step, steps=total,
                            loss=step_loss, losses={"ctc": step_loss}, lr=lr, eta_s=left)
            stopping = dist.any(bool(stop), device)
            if stopping or step % max(1, cfg.save_interval) == 0:
                save(epoch, gi + 1)
            if stopping:
                raise events.Interrupted(f"stopped at step {step}")

        train_loss = loss_sum / max(1, loss_n)
        if dist.main:
            val = evaluate(model, fe, tok, arch, val_ex, cfg.batch_size, device, amp) if val_ex else {}
            improved = best["cer"] is None or (val and val["cer"] < best["cer"]) or not val
            if improved:
                best = {"cer": val.get("cer"), "wer": val.get("wer"), "epoch": epoch + 1}
                _save_best(model, fe, tok, best_dir)
                events.emit("checkpoint", path=best_dir, epoch=epoch + 1, step=step, kind="best")
            metrics.add(epoch=epoch + 1, step=step, train_loss=round(train_loss, 5),
                        val_loss=_r(val.get("loss")), val_cer=_r(val.get("cer")),
                        val_wer=_r(val.get("wer")), lr=lr_at(step - 1, cfg.learning_rate, warmup, total))
            events.emit("progress", epoch=epoch + 1, epochs=cfg.epochs, step=step, steps=total,
                        loss=train_loss, losses={"ctc": train_loss}, val=val, eta_s=eta(step))
            events.log(f"epoch {epoch + 1} done: train loss {train_loss:.4f}"
                       + (f", val loss {val['loss']:.4f} CER {val['cer']:.3f} WER {val['wer']:.3f}" if val else ""))
        dist.barrier()
        if epoch + 1 < cfg.epochs and dist.any(bool(stop), device):
            save(epoch + 1, 0)
            raise events.Interrupted(f"stopped after epoch {epoch + 1}")

    if not (state and epoch0 >= cfg.epochs):
        save(cfg.epochs, 0)  # training done: a resume goes straight to post-correction and packing
    result = None
    if dist.main:
        loss_png = metrics.plot(["train_loss", "val_loss"], "W2V2-BERT CTC fine-tuning")
        result = finish.finish(cfg, best_dir, best, train_ex, val_ex, arch, device, stop, skipped)
        result.update(epochs_completed=cfg.epochs, steps=step, metrics_csv=metrics.path, loss_png=loss_png)
    dist.barrier()
    dist.stop()
    return result if dist.main else None


@torch.no_grad()
def evaluate(model, fe, tok, arch, examples, batch_size, device, amp) -> dict:
    """Validation loss and greedy-decoding CER/WER on normalised text."""
    model.eval()
    collate = data.Collate(examples, fe, tok, arch)
    order = sorted(range(len(examples)), key=lambda i: -examples[i].duration)
    hyps, losses = [""] * len(examples), []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = {k: v.to(device) for k, v in collate(idx).items()}
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            res = model(**batch)
        losses.append(res.loss.item() * len(idx))
        ids = res.logits.argmax(-1).cpu()
        lengths = output_lengths(model, batch["attention_mask"]).cpu()
        for j, i in enumerate(idx):
            hyps[i] = " ".join(tok.decode(ids[j, :lengths[j]].tolist()).split())
    refs = [e.text for e in examples]
    return {"loss": sum(losses) / len(examples), "cer": scoring.cer(hyps, refs),
            "wer": scoring.wer(hyps, refs)}


def _save_best(model, fe, tok, best_dir: str) -> None:
    """Writes the folder beside the old one, then swaps: never a half-written best model."""
    tmp = best_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_trained(model, fe, tok, tmp)
    old = best_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(best_dir):
        os.replace(best_dir, old)
    os.replace(tmp, best_dir)
    shutil.rmtree(old, ignore_errors=True)


def _load_resume(path: str) -> dict:
    if not os.path.exists(path):
        raise EngineError(f"resume checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"read resume checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or "arch" not in state or "vocab" not in state:
        raise EngineError(f"{path} is not a resumable ASR checkpoint")
    return state


def _amp_dtype(precision: str, device: torch.device):
    if device.type != "cuda" or precision == "fp32":
        return None  # CPU runs in fp32: autocast there is slower, not faster
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _silent(*_args, **_fields) -> None:
    pass


def _r(v):
    return None if v is None else round(float(v), 5)


def _fmt(seconds) -> str:
    return "?" if seconds is None else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"
