"""Training checkpoints in two sizes.

full      weights + optimizer moments + everything below: exact resume; stays on the
          machine (about 3x the weights with AdamW)
portable  weights + step + learning-rate schedule + RNG + bookkeeping, no optimizer
          moments: the one to upload (about 1x the weights); resuming from it
          continues the same schedule with fresh optimizer moments

Both are one dict of tensors and plain values (counters, configs as dicts, RNG
states as tensors: checkpoint.rng_state), written with torch.save and read with
weights_only=True: a portable checkpoint travels through the project, and a
file there that would run code when loaded fails the job, naming the file.
"""
import os

from .. import checkpoint, events, untrusted
from ..events import EngineError

FULL, PORTABLE = "resumable", "portable"
PREFIX = {FULL: "resumable_", PORTABLE: "portable_"}


def save(directory: str, step: int, state: dict, optimizer_state: dict, keep: int) -> list[tuple[str, str]]:
    """Writes both kinds; returns [(kind, path)], full first."""
    out = []
    for kind in (FULL, PORTABLE):
        path = os.path.join(directory, f"{PREFIX[kind]}step{step:08d}.pt")
        body = {**state, "kind": kind}
        if kind == FULL:
            body.update(optimizer_state)
        checkpoint.save_atomic(body, path)
        checkpoint.rotate(directory, PREFIX[kind], keep)
        out.append((kind, path))
    return out


REQUIRED = {"arch": str, "vocab": dict, "model": dict, "step": int, "epoch": int,
            "rng": dict, "config": dict, "model_config": dict, "fe_config": dict}


def load(path: str) -> dict:
    """A resumable or portable checkpoint; one that is refused or of another kind fails the
    job with its path (delete the file to train from the start)."""
    if not os.path.exists(path):
        raise EngineError(f"resume checkpoint not found: {path}")
    state = untrusted.load_tensors(path)
    if not isinstance(state, dict):
        raise EngineError(f"{path}: not a resumable ASR checkpoint")
    wrong = [k for k, t in REQUIRED.items() if not isinstance(state.get(k), t)]
    if wrong:
        raise EngineError(f"{path}: not a resumable ASR checkpoint of this version "
                          f"(missing or malformed: {', '.join(wrong)})")
    if "optimizer" not in state:
        events.warning(f"resuming from a portable checkpoint ({os.path.basename(path)}): same step and "
                       "learning-rate schedule, optimizer moments start fresh")
    return state


def sizes(model, trainable_only: bool = False) -> dict:
    """Bytes each kind takes for a model (fp32 weights, AdamW's two moments per trainable weight),
    counted without allocating: works on the meta device."""
    params = list(model.named_parameters())
    stored = sum(p.numel() * p.element_size() for n, p in params if p.requires_grad or not trainable_only)
    stored += sum(b.numel() * b.element_size() for _, b in model.named_buffers()) if not trainable_only else 0
    moments = 2 * sum(p.numel() * 4 for _, p in params if p.requires_grad)
    return {"parameters": sum(p.numel() for _, p in params),
            "trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "portable_bytes": stored, "full_bytes": stored + moments}
