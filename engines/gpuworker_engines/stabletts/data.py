"""Training data: cached mels, a reproducible validation split and
length-bucketed batches whose order is a pure function of (seed, epoch)."""
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .. import events
from ..dataset import Item
from ..events import EngineError, Interrupted
from .config import ModelConfig
from .mel import MelSpectrogram, load_wav, wav_to_mel
from .text import SymbolTable


@dataclass
class Example:
    id: str
    ids: list[int]
    mel_path: str
    frames: int


def prepare(items: list[Item], cfg: ModelConfig, table: SymbolTable, cache_dir: str,
            max_duration: float, stop=None) -> list[Example]:
    """Computes (or reuses) each item's mel; drops items the model cannot align.
    Mels are cached by audio file, so a stopped run loses none of this work."""
    key = hashlib.sha1(json.dumps([cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.win_length,
                                   cfg.n_mels, cfg.f_min, cfg.f_max]).encode()).hexdigest()[:12]
    folder = os.path.join(cache_dir, f"mel-{key}")
    os.makedirs(folder, exist_ok=True)
    mel = MelSpectrogram(cfg)
    examples, skipped = [], []
    for n, it in enumerate(items, 1):
        if stop:
            raise Interrupted(f"stopped while computing mels ({n - 1}/{len(items)} done)")
        st = os.stat(it.audio)
        name = hashlib.sha1(f"{it.audio}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
        path = os.path.join(folder, name + ".npy")
        if os.path.exists(path):
            frames = int(np.load(path, mmap_mode="r").shape[1])
        else:
            try:
                wav = load_wav(it.audio, cfg.sample_rate)
            except EngineError as e:
                raise EngineError(f"item {it.id}: {e}") from None
            if len(wav) > max_duration * cfg.sample_rate:
                skipped.append(f"{it.id} (longer than {max_duration:g} s)")
                continue
            m = wav_to_mel(wav, mel).numpy().astype(np.float32)
            frames = m.shape[1]
            tmp = path + f".{os.getpid()}.tmp.npy"
            np.save(tmp, m)
            os.replace(tmp, path)
        if frames > max_duration * cfg.sample_rate / cfg.hop_length + 1:
            skipped.append(f"{it.id} (longer than {max_duration:g} s)")
            continue
        ids, _ = table.encode(it.text)
        if len(ids) > frames:
            skipped.append(f"{it.id} (text too long for its audio: {len(ids)} symbols, {frames} frames)")
            continue
        examples.append(Example(it.id, ids, path, frames))
        if n % 500 == 0:
            events.log(f"mels: {n}/{len(items)}")
    if skipped:
        events.warning(f"skipped {len(skipped)} item(s): " + "; ".join(skipped[:10])
                       + (" ..." if len(skipped) > 10 else ""))
    if not examples:
        raise EngineError("no usable training items (all were skipped)")
    return examples


def split(examples: list[Example], val_split: float, seed: int,
          val_ids: list[str] | None = None) -> tuple[list[Example], list[Example]]:
    """Validation items: the stored ones on resume, else a seeded random val_split share
    (at least one when there are two or more items)."""
    if val_ids is None:
        n_val = int(round(len(examples) * val_split)) if val_split > 0 else 0
        if val_split > 0 and len(examples) >= 2:
            n_val = min(max(n_val, 1), len(examples) - 1)
        rng = np.random.default_rng([seed, 7])
        chosen = set(rng.permutation(len(examples))[:n_val].tolist())
        val_ids = [e.id for i, e in enumerate(examples) if i in chosen]
    wanted = set(val_ids)
    train = [e for e in examples if e.id not in wanted]
    val = [e for e in examples if e.id in wanted]
    if not train:
        raise EngineError("no training items left after the validation split")
    return train, val


def epoch_batches(frames: list[int], batch_size: int, seed: int, epoch: int, bucket: int,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """Shuffled, then sorted by length inside buckets of `bucket` batches (little padding),
    then the batches shuffled; rank r of w takes every w-th batch (same count on all ranks)."""
    rng = np.random.default_rng([seed, epoch, 11])
    order = rng.permutation(len(frames)).tolist()
    chunk = batch_size * max(bucket, 1)
    batches = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: frames[i])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if world > 1:
        per_rank = max(1, len(batches) // world)
        batches = [batches[(rank + world * k) % len(batches)] for k in range(per_rank)]
    return batches


def mel_stats(examples: list[Example], limit: int = 2000) -> tuple[float, float]:
    """Mean and standard deviation of the log-mel values (of up to `limit` items)."""
    total, sq, n = 0.0, 0.0, 0
    for e in examples[:limit]:
        m = np.load(e.mel_path).astype(np.float64)
        total, sq, n = total + m.sum(), sq + (m ** 2).sum(), n + m.size
    mean = total / n
    return float(mean), float(np.sqrt(max(sq / n - mean ** 2, 1e-6)))


def collate(examples: list[Example], device) -> tuple[torch.Tensor, ...]:
    x_lens = torch.tensor([len(e.ids) for e in examples])
    y_lens = torch.tensor([e.frames for e in examples])
    x = torch.zeros(len(examples), int(x_lens.max()), dtype=torch.long)
    mels = [np.load(e.mel_path) for e in examples]
    y = torch.zeros(len(examples), mels[0].shape[0], int(y_lens.max()))
    for i, (e, m) in enumerate(zip(examples, mels)):
        x[i, :len(e.ids)] = torch.tensor(e.ids)
        y[i, :, :m.shape[1]] = torch.from_numpy(m)
    return x.to(device), x_lens.to(device), y.to(device), y_lens.to(device)
