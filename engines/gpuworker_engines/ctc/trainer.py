"""Fine-tunes a CTC model on the dataset; `finish.py` then adds the language model and
post-correction and packs the artifact.

Top-down: train() sets up a Run (the data split; the recipe's model, fresh, from an
earlier artifact or from a checkpoint), takes its optimizer steps epoch by epoch
(training.py: the same recipe on 1 or N processes), evaluates the held-out items at
each epoch's end, keeps the best model by validation CER and hands over to
finish.finish(). A recipe supplies what differs between engines:

    arch(cfg) -> str                      architecture of the base, without loading weights
    build(cfg, texts) -> Built            model, feature extractor, vocabulary, notes
    restore(cfg, state) -> Built          the same from a checkpoint
    weights(model) -> dict                the tensors a checkpoint keeps
    save_model(model, fe, tok, dir)       the best-model folder
    load_model(dir, device, card) -> (model, fe, tok)
    usage(card) -> str                    how to load the artifact, for the model card
"""
import math
import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import checkpoint, events, training
from ..events import EngineError
from ..metrics import MetricsLog
from . import checkpoints, data, finish, scoring
from . import text as text_mod
from .audio import frames_per_second, output_lengths
from .decode import Greedy, Labels

DECAY = "linear"  # the CTC recipes' schedule: linear warmup, then linear decay to zero


@dataclass
class Built:
    model: object
    fe: object
    vocab: dict
    arch: str
    info: dict = field(default_factory=dict)  # base_model, licence, new_characters, ...


@dataclass
class Run:
    """A training run: what setup() builds, and where the steps have got to."""
    recipe: object
    cfg: object
    procs: training.Processes
    built: Built
    hp: dict  # the hyperparameters used, as the result and the model card report them
    split: tuple  # (train, validation, test) examples
    skipped: list
    tok: object
    net: object
    opt: object
    scaler: object
    amp: object  # autocast dtype, None for fp32
    plan: training.Plan
    warmup: int
    total: int
    # the position (a checkpoint keeps it)
    step: int = 0
    epoch0: int = 0  # the epoch and optimizer step within it the run starts at
    group0: int = 0  # (optimizer steps; a checkpoint keeps micro-batches: batch_pos)
    loss_sum: float = 0.0
    loss_n: int = 0
    best: dict = field(default_factory=lambda: {"cer": None, "epoch": None, "wer": None})
    resumed: bool = False
    metrics: MetricsLog | None = None
    progress: training.Progress | None = None

    @property
    def out(self) -> str:
        return os.path.abspath(self.cfg.output_dir)

    @property
    def device(self) -> torch.device:
        return self.procs.torch_device

    def lr(self, step: int) -> float:
        return training.lr_at(step, self.cfg.learning_rate, self.warmup, self.total, DECAY)


def train(recipe, cfg, stop) -> dict:
    run = setup(recipe, cfg)
    for epoch in range(run.epoch0, cfg.epochs):
        train_epoch(run, epoch, stop)
        end_of_epoch(run, epoch, stop)
    return done(run, stop)


def setup(recipe, cfg) -> Run:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    procs = training.Processes()
    device = procs.start(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = os.path.abspath(cfg.output_dir)
    if procs.main:
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)

    examples, skipped = data.prepare(cfg.dataset, cfg.text_normalization.to_dict(), cfg.max_duration_s)
    state = checkpoints.load(cfg.resume) if cfg.resume else None
    if state:
        with checkpoint.blamed(cfg.resume):
            hp = cfg.resolve(state["arch"])
            built = recipe.restore(cfg, state)
    else:
        hp = cfg.resolve(recipe.arch(cfg))
        built = recipe.build(cfg, [e.text for e in examples])
    model = built.model
    hp["add_adapter"] = bool(getattr(model.config, "add_adapter", False))
    hp.update(built.info.get("hyperparameters") or {})  # what only this engine has, e.g. adapter size
    vocab_path = os.path.join(out, "vocab.json")
    if procs.main:
        text_mod.save(built.vocab, vocab_path)
    procs.barrier()
    tok = text_mod.tokenizer(vocab_path)
    examples, short = data.drop_too_short(examples, tok, frames_per_second(model))
    train_ex, val_ex, test_ex = data.split(examples, cfg.val_split, cfg.test_split, cfg.seed)
    if not train_ex:
        raise EngineError("no training items left (see the skipped items)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    events.log(f"{built.arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params "
               f"({sum(p.numel() for p in trainable) / 1e6:.2f}M trained), vocab {len(built.vocab)}, "
               f"{len(train_ex)} train / {len(val_ex)} validation / {len(test_ex)} test items, "
               f"device {device}, {procs.world} process(es)")

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
    net = procs.wrap(model, find_unused=bool(cfg.layerdrop > 0 or cfg.mask_time_prob > 0))

    plan = training.Plan(cfg.batch_size, cfg.gradient_accumulation_steps, procs.world)
    hp.update(plan.hyperparameters(math.ceil(len(train_ex) / cfg.batch_size), cfg.epochs))
    total = hp["total_steps"]
    warmup = min(cfg.warmup_steps, int(cfg.warmup_max_fraction * total))  # 0: no warmup
    hp["warmup_steps_used"] = warmup
    run = Run(recipe, cfg, procs, built, hp, (train_ex, val_ex, test_ex), skipped + short, tok, net,
              opt, scaler, amp, plan, warmup, total)
    if state:
        _restore(run, state)
    run.metrics = MetricsLog(out, resume_epoch=run.epoch0 if state else None) if procs.main else None
    run.progress = training.Progress(cfg.epochs, total, run.step, cfg.progress_every_steps, procs.main)
    return run


def _restore(run: Run, state: dict) -> None:
    cfg = run.cfg
    with checkpoint.blamed(cfg.resume):
        if "optimizer" in state:
            run.opt.load_state_dict(state["optimizer"])
            run.scaler.load_state_dict(state["scaler"])
        run.step, run.epoch0 = state["step"], state["epoch"]
        was = state["config"]["batch_size"]
        if "batch_pos" in state:
            pos = state["batch_pos"]
        else:  # written before the position was kept in micro-batches: optimizer steps of the job's size
            pos = state["group"] * state["config"]["gradient_accumulation_steps"]
        if type(pos) is not int or type(was) is not int or pos < 0 or was < 1:
            raise ValueError("its position in the epoch is malformed")
        if was != cfg.batch_size:
            # e.g. the worker's out-of-memory retry: carry on from about as many items into the epoch
            pos = pos * was // cfg.batch_size
            events.warning(f"batch size changed on resume: continuing epoch {run.epoch0 + 1} "
                           f"after {pos} batches of {cfg.batch_size}")
        # the step that holds the next micro-batch, whatever the process count now
        run.group0 = -(-pos // run.plan.micro_per_step)
        run.loss_sum, run.loss_n, run.best = state["loss_sum"], state["loss_n"], state["best"]
        checkpoint.set_rng_state(state["rng"])
    run.resumed = True
    events.log(f"resumed from {cfg.resume} ({state.get('kind', checkpoints.FULL)}) at step {run.step} "
               f"(epoch {run.epoch0 + 1}, batch group {run.group0})")


def train_epoch(run: Run, epoch: int, stop) -> None:
    cfg, procs = run.cfg, run.procs
    train_ex = run.split[0]
    batches = data.epoch_batches([e.duration for e in train_ex], cfg.batch_size, cfg.seed, epoch,
                                 cfg.group_by_length)
    shares = run.plan.shares(batches, procs.rank)
    start = run.group0 if epoch == run.epoch0 else 0
    if start == 0:
        run.loss_sum, run.loss_n = 0.0, 0
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if run.device.type == "cuda" else 0)
    # a private generator keeps the loader from drawing on the global RNG (exact resume)
    loader = iter(torch.utils.data.DataLoader(
        [m.batch for share in shares[start:] for m in share], batch_size=None,
        collate_fn=data.Collate(train_ex, run.built.fe, run.tok), num_workers=workers,
        generator=torch.Generator().manual_seed(cfg.seed)))
    for gi in range(start, len(shares)):
        losses, lr = train_step(run, shares[gi], loader)
        run.loss_sum, run.loss_n = run.loss_sum + losses["ctc"], run.loss_n + 1
        run.progress.step(epoch, run.step, losses, lr)
        stopping = procs.any(bool(stop))
        if stopping or run.step % cfg.save_every_steps == 0:
            save(run, epoch, min((gi + 1) * run.plan.micro_per_step, len(batches)))
        if stopping:
            raise events.Interrupted(f"stopped at step {run.step}")


def train_step(run: Run, micro: list[training.Micro], loader) -> tuple[dict, float]:
    """One optimizer step over this process's micro-batches (the loader yields them in order)."""
    cfg, device, amp = run.cfg, run.device, run.amp
    run.net.train()
    lr = run.lr(run.step)
    training.set_lr(run.opt, lr)

    def forward(_indices) -> dict:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return {"ctc": run.net(**batch).loss}

    losses = training.accumulate(run.net, micro, run.procs, forward, cfg.seed, run.step,
                                 backward=lambda loss: run.scaler.scale(loss).backward())
    run.scaler.unscale_(run.opt)
    torch.nn.utils.clip_grad_norm_([p for p in run.built.model.parameters() if p.requires_grad],
                                   cfg.max_grad_norm)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    run.step += 1
    return losses, lr


def end_of_epoch(run: Run, epoch: int, stop) -> None:
    """Held-out scores, the best model, metrics; a stop request is honoured here too."""
    cfg, procs = run.cfg, run.procs
    train_loss = run.loss_sum / max(1, run.loss_n)
    if procs.main:
        _, val_ex, test_ex = run.split
        model, fe, greedy = run.built.model, run.built.fe, Greedy(Labels(run.built.vocab))
        val = evaluate(model, fe, run.tok, greedy, val_ex, cfg.batch_size, run.device, run.amp) if val_ex else {}
        test = evaluate(model, fe, run.tok, greedy, test_ex, cfg.batch_size, run.device, run.amp) if test_ex else {}
        if run.best["cer"] is None or not val or val["cer"] < run.best["cer"]:
            run.best = {"cer": val.get("cer"), "wer": val.get("wer"), "epoch": epoch + 1}
            best_dir = os.path.join(run.out, "best")
            _save_best(run.recipe, model, fe, run.tok, best_dir)
            events.emit("checkpoint", path=best_dir, epoch=epoch + 1, step=run.step, kind="best")
        run.metrics.add(epoch=epoch + 1, step=run.step, train_loss=round(train_loss, 5),
                        val_loss=_r(val.get("loss")), val_cer=_r(val.get("cer")), val_wer=_r(val.get("wer")),
                        test_cer=_r(test.get("cer")), test_wer=_r(test.get("wer")), lr=run.lr(run.step - 1))
        _write_training_metrics(run.out, run.metrics.rows)
        run.progress.epoch_end(epoch + 1, run.step, {"ctc": train_loss},
                               {k: val[k] for k in ("loss", "cer", "wer")} if val else {})
        events.log(f"epoch {epoch + 1} done: train loss {train_loss:.4f}"
                   + (f", val loss {val['loss']:.4f} CER {val['cer']:.3f} WER {val['wer']:.3f}" if val else ""))
    procs.barrier()
    if epoch + 1 < cfg.epochs and procs.any(bool(stop)):
        save(run, epoch + 1, 0)
        raise events.Interrupted(f"stopped after epoch {epoch + 1}")


def done(run: Run, stop) -> dict | None:
    """The last checkpoint, then (rank 0) the finishing steps: language model, post-correction, artifact."""
    cfg, procs = run.cfg, run.procs
    if not (run.resumed and run.epoch0 >= cfg.epochs):
        save(run, cfg.epochs, 0)  # training done: a resume goes straight to the finishing steps
    run.opt.state.clear()  # the finishing steps load the best model afresh: free what training held
    if run.device.type == "cuda":
        run.built.model.to("cpu")
        torch.cuda.empty_cache()
    result = None
    if procs.main:
        train_ex, val_ex, test_ex = run.split
        loss_png = run.metrics.plot(["train_loss", "val_loss"], f"{run.recipe.title} CTC fine-tuning")
        result = finish.finish(run.recipe, cfg, finish.Run(
            best_dir=os.path.join(run.out, "best"), best=run.best, train=train_ex, val=val_ex, test=test_ex,
            skipped=run.skipped, device=run.device, hyperparameters=run.hp, info=run.built.info, stop=stop))
        result.update(epochs_completed=cfg.epochs, steps=run.step, metrics_csv=run.metrics.path,
                      loss_png=loss_png, training_metrics_csv=os.path.join(run.out, TRAINING_METRICS),
                      vocabulary_size=len(run.built.vocab))
    procs.barrier()
    procs.stop()
    return result


def save(run: Run, epoch: int, batch_pos: int) -> None:
    """Both checkpoint kinds at this step (rank 0); `batch_pos`: micro-batches of `epoch` done,
    over all processes (a resume on another process count starts at the step that holds the next)."""
    if run.procs.main:
        built = run.built
        body = {"model": run.recipe.weights(built.model), "step": run.step, "epoch": epoch, "batch_pos": batch_pos,
                "loss_sum": run.loss_sum, "loss_n": run.loss_n, "best": run.best, "rng": checkpoint.rng_state(),
                "vocab": built.vocab, "arch": built.arch, "model_config": built.model.config.to_dict(),
                "fe_config": built.fe.to_dict(), "config": run.cfg.to_dict(), "hyperparameters": run.hp,
                "schedule": {"base_lr": run.cfg.learning_rate, "warmup": run.warmup, "total": run.total,
                             "decay": DECAY},
                "info": built.info}
        saved = checkpoints.save(os.path.join(run.out, "checkpoints"), run.step, body,
                                 {"optimizer": run.opt.state_dict(), "scaler": run.scaler.state_dict()},
                                 run.cfg.keep_checkpoints)
        for kind, path in saved:
            events.emit("checkpoint", path=path, epoch=epoch, step=run.step, kind=kind,
                        bytes=os.path.getsize(path), upload=kind == checkpoints.PORTABLE)
    run.procs.barrier()


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


def _r(v):
    return None if v is None else round(float(v), 5)
