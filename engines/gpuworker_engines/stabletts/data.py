"""Training data: cached log-mels, a reproducible validation split, length-bucketed
batches whose order is a pure function of (seed, epoch), and the style windows."""
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from .. import events
from ..checkpoint import atomic_open
from ..dataset import Item
from ..events import EngineError, Interrupted
from .config import ModelConfig
from .frontend import FrontEnd
from .mel import LogMel, load_wav, wav_to_mel


@dataclass
class Example:
    id: str
    ids: list[int]
    mel_path: str
    frames: int


def prepare(items: list[Item], cfg: ModelConfig, fe: FrontEnd, cache_dir: str,
            max_duration: float, stop=None) -> tuple[list[Example], dict[str, int]]:
    """Each item's ids and cached mel -> (usable examples, unmapped characters {char: n}).
    Mels are cached by audio file, so a stopped run loses none of this work."""
    key = hashlib.sha1(json.dumps([cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.win_length,
                                   cfg.n_mels, cfg.f_min, cfg.f_max]).encode()).hexdigest()[:12]
    folder = os.path.join(cache_dir, f"mel-{key}")
    os.makedirs(folder, exist_ok=True)
    mel = LogMel(cfg)
    max_frames = max_duration * cfg.sample_rate / cfg.hop_length + 1
    examples, skipped, unmapped = [], [], Counter()
    for n, it in enumerate(items, 1):
        if stop:
            raise Interrupted(f"stopped while computing mels ({n - 1}/{len(items)} done)")
        ids, lost = fe.encode(it.text)
        unmapped.update(lost)
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
            with atomic_open(path) as f:
                np.save(f, m)
        if frames > max_frames:
            skipped.append(f"{it.id} (longer than {max_duration:g} s)")
        elif len(ids) == 1:
            skipped.append(f"{it.id} (no text the {fe.kind} frontend can read)")
        elif len(ids) > frames:
            skipped.append(f"{it.id} (text too long for its audio: {len(ids)} tokens, {frames} frames)")
        else:
            examples.append(Example(it.id, ids, path, frames))
        if n % 500 == 0:
            events.log(f"mels: {n}/{len(items)}")
    if skipped:
        events.warning(f"skipped {len(skipped)} item(s): " + "; ".join(skipped[:10])
                       + (" ..." if len(skipped) > 10 else ""))
    if not examples:
        raise EngineError("no usable training items (all were skipped)")
    return examples, dict(sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))


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


def write_split(path: str, train: list[Example], val: list[Example]) -> str:
    with atomic_open(path) as f:
        f.write(json.dumps({"train": [e.id for e in train], "val": [e.id for e in val]},
                           ensure_ascii=False).encode("utf-8"))
    return path


def epoch_batches(frames: list[int], batch_size: int, seed: int, epoch: int, bucket: int) -> list[list[int]]:
    """Shuffled, then sorted by length inside buckets of `bucket` batches (little padding),
    then the batches shuffled; the same list in every process (training.Plan deals it out)."""
    rng = np.random.default_rng([seed, epoch, 11])
    order = rng.permutation(len(frames)).tolist()
    chunk = batch_size * max(bucket, 1)
    batches = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: frames[i])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: list[Example], device) -> tuple[torch.Tensor, ...]:
    """-> ids [b, Tx] (0-padded), lengths, log-mels [b, mels, Ty] (0-padded), lengths."""
    x_lens = torch.tensor([len(e.ids) for e in examples])
    y_lens = torch.tensor([e.frames for e in examples])
    x = torch.zeros(len(examples), int(x_lens.max()), dtype=torch.long)
    mels = [np.load(e.mel_path) for e in examples]
    y = torch.zeros(len(examples), mels[0].shape[0], int(y_lens.max()))
    for i, (e, m) in enumerate(zip(examples, mels)):
        x[i, :len(e.ids)] = torch.tensor(e.ids)
        y[i, :, :m.shape[1]] = torch.from_numpy(m)
    return x.to(device), x_lens.to(device), y.to(device), y_lens.to(device)


def style_windows(y, y_lens, generator=None):
    """The voice the style encoder sees in training, as the published recipe slices it
    (KdaiP's random_slice_tensor): an utterance of L >= 12 frames gives a window of a
    uniformly drawn whole length in [L // 12, L // 3] at a uniformly drawn start; a
    shorter one is used whole. Short windows keep the encoder from copying the
    utterance it is asked to speak. -> windows [b, mels, W] (0-padded), lengths [b]."""
    b = y.shape[0]
    lens = y_lens.long()
    lo, hi = lens // 12, lens // 3
    size = lo + (torch.rand(b, device=y.device, generator=generator) * (hi - lo + 1)).long()
    size = torch.where(lens < 12, lens, torch.minimum(size, hi))  # rand < 1, but be sure
    start = (torch.rand(b, device=y.device, generator=generator) * (lens - size + 1)).long()
    start = torch.minimum(start, lens - size)
    width = int(size.max())
    idx = (start[:, None] + torch.arange(width, device=y.device)[None]).clamp(max=y.shape[2] - 1)
    window = torch.gather(y, 2, idx.unsqueeze(1).expand(-1, y.shape[1], -1))
    valid = torch.arange(width, device=y.device)[None] < size[:, None]
    return window * valid.unsqueeze(1).to(y.dtype), size
