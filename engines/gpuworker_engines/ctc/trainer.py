"""Fine-tunes a CTC model on the dataset; `finish.py` then adds the language model and
post-correction and packs the artifact.

Top-down: train() splits the data, asks the engine's recipe for the model (fresh,
from an earlier artifact, or from a checkpoint), runs the step loop with held-out
evaluation at each epoch end, keeps the best model by validation CER and hands
over to finish.finish(). A recipe supplies what differs between engines:

    arch(cfg) -> str                      architecture of the base, without loading weights
    build(cfg, texts) -> Built            model, feature extractor, vocabulary, notes
    restore(cfg, state) -> Built          the same from a checkpoint
    weights(model) -> dict                the tensors a checkpoint keeps
    save_model(model, fe, tok, dir)       the best-model folder
    load_model(dir, device, card) -> (model, fe, tok)
    usage(card) -> str                    how to load the artifact, for the model card
"""
import contextlib
import math
import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import checkpoint, events
from ..events import EngineError
from ..metrics import MetricsLog
from . import checkpoints, data, finish, scoring
from . import text as text_mod
from .audio import frames_per_second, output_lengths
from .decode import Greedy, Labels
from .dist import Dist


@dataclass
class Built:
    model: object
    fe: object
    vocab: dict
    arch: str
    info: dict = field(default_factory=dict)  # base_model, licence, new_characters, ...


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup to `base`, then linear decay to zero at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


def train(recipe, cfg, stop) -> dict:
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
    ckpt_dir, best_dir = os.path.join(out, "checkpoints"), os.path.join(out, "best")
    if dist.main:
        os.makedirs(ckpt_dir, exist_ok=True)

    examples, skipped = data.prepare(cfg.dataset, cfg.text_normalization, cfg.max_duration_s)
    state = checkpoints.load(cfg.resume) if cfg.resume else None
    if state:
        with checkpoints.blamed(cfg.resume):
            arch = state["arch"]
            hp = cfg.resolve(arch, dist.world)
            built = recipe.restore(cfg, state)
    else:
        arch = recipe.arch(cfg)
        hp = cfg.resolve(arch, dist.world)
        built = recipe.build(cfg, [e.text for e in examples])
    model, fe, vocab = built.model, built.fe, built.vocab
    hp["add_adapter"] = bool(getattr(model.config, "add_adapter", False))
    hp.update(built.info.get("hyperparameters") or {})  # what only this engine has, e.g. adapter size
    vocab_path = os.path.join(out, "vocab.json")
    if dist.main:
        text_mod.save(vocab, vocab_path)
    dist.barrier()
    tok = text_mod.tokenizer(vocab_path)
    examples, short = data.drop_too_short(examples, tok, frames_per_second(model))
    skipped += short
    train_ex, val_ex, test_ex = data.split(examples, cfg.val_split, cfg.test_split, cfg.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    events.log(f"{arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params "
               f"({sum(p.numel() for p in trainable) / 1e6:.2f}M trained), vocab {len(vocab)}, "
               f"{len(train_ex)} train / {len(val_ex)} validation / {len(test_ex)} test items, "
               f"device {device}, world {dist.world}")

    amp = _amp_dtype(cfg.precision, device)
    hp["precision"] = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    use_ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device.type == "cuda"
    hp["gradient_checkpointing"] = bool(use_ckpt)
    if use_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    # layer drop skips whole layers and time masking may leave its embedding unused on a
    # step: DDP must then be told that some parameters get no gradient
    net = dist.wrap(model, device, find_unused=bool(cfg.layerdrop > 0 or cfg.mask_time_prob > 0))

    durations = [e.duration for e in train_ex]
    n_batches = math.ceil(len(train_ex) / cfg.batch_size)
    n_local = n_batches // dist.world if dist.enabled else n_batches
    if n_local < 1:
        raise EngineError(f"too few training items ({len(train_ex)}) for {dist.world} processes")
    steps_per_epoch = math.ceil(n_local / cfg.gradient_accumulation_steps)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, min(cfg.warmup_steps, int(cfg.warmup_max_fraction * total)))
    hp["warmup_steps_used"], hp["total_steps"] = warmup, total

    step, epoch0, group0, loss_sum, loss_n = 0, 0, 0, 0.0, 0
    best = {"cer": None, "epoch": None, "wer": None}
    if state:
        with checkpoints.blamed(cfg.resume):
            if "optimizer" in state:
                opt.load_state_dict(state["optimizer"])
                scaler.load_state_dict(state["scaler"])
            step, epoch0, group0 = state["step"], state["epoch"], state["group"]
            was = state["config"]["batch_size"] * state["config"]["gradient_accumulation_steps"]
            per_group = cfg.batch_size * cfg.gradient_accumulation_steps
            if was != per_group or state["config"]["batch_size"] != cfg.batch_size:
                # e.g. the worker's out-of-memory retry: carry on from about as many items into the epoch
                group0 = group0 * was // per_group
                events.warning(f"batch size changed on resume: continuing epoch {epoch0 + 1} "
                               f"at batch group {group0}")
            loss_sum, loss_n, best = state["loss_sum"], state["loss_n"], state["best"]
            checkpoint.set_rng_state(state["rng"])
        events.log(f"resumed from {cfg.resume} ({state.get('kind', checkpoints.FULL)}) at step {step} "
                   f"(epoch {epoch0 + 1}, batch group {group0})")
    metrics = MetricsLog(out, resume_epoch=epoch0 if state else None) if dist.main else None
    collate = data.Collate(train_ex, fe, tok)
    greedy = Greedy(Labels(vocab))
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    eta = events.ETA(total, step)
    pace = events.Pace(cfg.progress_every_steps)

    def save(epoch: int, group: int) -> None:
        if dist.main:
            body = {"model": recipe.weights(model), "step": step, "epoch": epoch, "group": group,
                    "loss_sum": loss_sum, "loss_n": loss_n, "best": best, "rng": checkpoint.rng_state(),
                    "vocab": vocab, "arch": arch, "model_config": model.config.to_dict(),
                    "fe_config": fe.to_dict(), "config": cfg.to_dict(), "hyperparameters": hp,
                    "schedule": {"base_lr": cfg.learning_rate, "warmup": warmup, "total": total},
                    "info": built.info}
            saved = checkpoints.save(ckpt_dir, step, body, {"optimizer": opt.state_dict(),
                                                            "scaler": scaler.state_dict()}, cfg.keep_checkpoints)
            for kind, path in saved:
                events.emit("checkpoint", path=path, epoch=epoch, step=step, kind=kind,
                            bytes=os.path.getsize(path), upload=kind == checkpoints.PORTABLE)
        dist.barrier()

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
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
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
            if dist.main and pace.due(step):
                events.emit("progress", epoch=epoch + 1, epochs=cfg.epochs, step=step, steps=total,
                            loss=step_loss, losses={"ctc": step_loss}, lr=lr, eta_s=left)
            stopping = dist.any(bool(stop), device)
            if stopping or step % max(1, cfg.save_interval) == 0:
                save(epoch, gi + 1)
            if stopping:
                raise events.Interrupted(f"stopped at step {step}")

        train_loss = loss_sum / max(1, loss_n)
        if dist.main:
            val = evaluate(model, fe, tok, greedy, val_ex, cfg.batch_size, device, amp) if val_ex else {}
            test = evaluate(model, fe, tok, greedy, test_ex, cfg.batch_size, device, amp) if test_ex else {}
            if best["cer"] is None or not val or val["cer"] < best["cer"]:
                best = {"cer": val.get("cer"), "wer": val.get("wer"), "epoch": epoch + 1}
                _save_best(recipe, model, fe, tok, best_dir)
                events.emit("checkpoint", path=best_dir, epoch=epoch + 1, step=step, kind="best")
            metrics.add(epoch=epoch + 1, step=step, train_loss=round(train_loss, 5),
                        val_loss=_r(val.get("loss")), val_cer=_r(val.get("cer")), val_wer=_r(val.get("wer")),
                        test_cer=_r(test.get("cer")), test_wer=_r(test.get("wer")),
                        lr=lr_at(step - 1, cfg.learning_rate, warmup, total))
            _write_training_metrics(out, metrics.rows)
            events.emit("progress", epoch=epoch + 1, epochs=cfg.epochs, step=step, steps=total,
                        loss=train_loss, losses={"ctc": train_loss},
                        val={k: val[k] for k in ("loss", "cer", "wer")} if val else {}, eta_s=eta(step))
            events.log(f"epoch {epoch + 1} done: train loss {train_loss:.4f}"
                       + (f", val loss {val['loss']:.4f} CER {val['cer']:.3f} WER {val['wer']:.3f}" if val else ""))
        dist.barrier()
        if epoch + 1 < cfg.epochs and dist.any(bool(stop), device):
            save(epoch + 1, 0)
            raise events.Interrupted(f"stopped after epoch {epoch + 1}")

    if not (state and epoch0 >= cfg.epochs):
        save(cfg.epochs, 0)  # training done: a resume goes straight to the finishing steps
    opt.state.clear()  # the finishing steps load the best model afresh: free what training held
    if device.type == "cuda":
        model.to("cpu")
        torch.cuda.empty_cache()
    result = None
    if dist.main:
        loss_png = metrics.plot(["train_loss", "val_loss"], f"{recipe.title} CTC fine-tuning")
        result = finish.finish(recipe, cfg, finish.Run(
            best_dir=best_dir, best=best, train=train_ex, val=val_ex, test=test_ex, skipped=skipped,
            device=device, hyperparameters=hp, info=built.info, stop=stop))
        result.update(epochs_completed=cfg.epochs, steps=step, metrics_csv=metrics.path, loss_png=loss_png,
                      training_metrics_csv=os.path.join(out, TRAINING_METRICS), vocabulary_size=len(vocab))
    dist.barrier()
    dist.stop()
    return result if dist.main else None


@torch.no_grad()
def evaluate(model, fe, tok, greedy, examples, batch_size, device, amp) -> dict:
    """Held-out loss and greedy-decoding CER/WER on normalised text."""
    model.eval()
    collate = data.Collate(examples, fe, tok)
    order = sorted(range(len(examples)), key=lambda i: -examples[i].duration)
    hyps, losses = [""] * len(examples), []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = {k: v.to(device) for k, v in collate(idx).items()}
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            res = model(**batch)
        losses.append(res.loss.item() * len(idx))
        lp = torch.log_softmax(res.logits.float(), -1).cpu().numpy()
        lengths = output_lengths(model, batch["attention_mask"]).cpu()
        for j, text in enumerate(greedy([lp[j, :lengths[j]] for j in range(len(idx))])):
            hyps[idx[j]] = text
    refs = [e.text for e in examples]
    return {"loss": sum(losses) / len(examples), "cer": scoring.cer(hyps, refs), "wer": scoring.wer(hyps, refs)}


TRAINING_METRICS = "training_metrics.csv"


def _write_training_metrics(out: str, rows: list[dict]) -> None:
    """epoch,train_total_loss,val_total_loss: the loss curves in the shape other engines use."""
    lines = ["epoch,train_total_loss,val_total_loss"]
    lines += [f"{r['epoch']},{r.get('train_loss', '')},{r.get('val_loss', '')}" for r in rows]
    with checkpoint.atomic_open(os.path.join(out, TRAINING_METRICS)) as f:
        f.write(("\n".join(lines) + "\n").encode())


def _save_best(recipe, model, fe, tok, best_dir: str) -> None:
    """Writes the folder beside the old one, then swaps: never a half-written best model."""
    tmp = best_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    recipe.save_model(model, fe, tok, tmp)
    old = best_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(best_dir):
        os.replace(best_dir, old)
    os.replace(tmp, best_dir)
    shutil.rmtree(old, ignore_errors=True)


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
