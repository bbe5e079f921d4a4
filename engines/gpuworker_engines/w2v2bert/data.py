"""Training examples: checks, train/validation split, length-grouped batches, collation."""
import random
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from .. import dataset, events
from ..events import EngineError
from .model import featurize, load_audio
from .vocab import normalize

SILENCE_PEAK = 1e-3  # about -60 dBFS: nothing a microphone would call speech


@dataclass
class Example:
    id: str
    text: str  # normalised: what the CTC model learns
    original: str  # as written in the project: what post-correction aims for
    audio: str
    duration: float


def is_silent(wav: np.ndarray) -> bool:
    return wav.size == 0 or float(np.max(np.abs(wav))) < SILENCE_PEAK


def frames_per_second(arch: str, add_adapter: bool) -> float:
    # fbank 100 Hz stacked in pairs -> 50 Hz; the adapter halves it; wav2vec2's CNN gives 50 Hz
    if arch == "w2v2bert":
        return 25.0 if add_adapter else 50.0
    return 50.0


def prepare(dataset_dir: str, norm: dict, max_duration_s: float) -> tuple[list[Example], list[dict]]:
    """Reads the dataset and drops unusable items: returns (examples, skipped with reasons)."""
    items = dataset.load(dataset_dir, need_audio=True, need_text=True)
    examples, skipped = [], []
    for it in items:
        text = normalize(it.text, **norm)
        if not text:
            skipped.append({"id": it.id, "reason": "text is empty after normalisation"})
            continue
        try:
            info = sf.info(it.audio)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"item {it.id}: unreadable audio {it.audio}: {e}") from None
        duration = info.frames / info.samplerate
        if duration > max_duration_s:
            skipped.append({"id": it.id, "reason": f"audio longer than {max_duration_s:g}s"})
            continue
        if is_silent(load_audio(it.audio)):
            skipped.append({"id": it.id, "reason": "audio is silent"})
            continue
        examples.append(Example(it.id, text, it.text.strip(), it.audio, duration))
    for s in skipped:
        events.warning(f"skipped item {s['id']}: {s['reason']}")
    if not examples:
        raise EngineError("no usable training items: " +
                          "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:5]))
    return examples, skipped


def drop_too_short(examples: list[Example], tok, fps: float) -> tuple[list[Example], list[dict]]:
    """CTC needs at least one output frame per label (two between repeated letters)."""
    kept, skipped = [], []
    for ex in examples:
        ids = tok(ex.text).input_ids
        need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if ex.duration * fps < need:
            skipped.append({"id": ex.id, "reason": "audio too short for its text"})
        else:
            kept.append(ex)
    for s in skipped:
        events.warning(f"skipped item {s['id']}: {s['reason']}")
    if not kept:
        raise EngineError("no usable training items: every clip is too short for its text")
    return kept, skipped


def split(examples: list[Example], val_split: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(val_split * len(examples)))
    if val_split > 0 and len(examples) >= 4:
        n_val = max(1, n_val)
    n_val = min(n_val, len(examples) - 1)
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    return train, val


def epoch_batches(durations: list[float], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool) -> list[list[int]]:
    """Batch order for one epoch, a pure function of (seed, epoch) so resume replays it.

    Grouping sorts within chunks of 50 batches, so each batch holds similar lengths
    (less padding) while the epoch order stays random.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(durations)).tolist()
    if group_by_length:
        mega = batch_size * 50
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda k: -durations[k])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class Collate:
    """Turns a list of examples into model inputs plus -100-padded labels."""

    def __init__(self, examples: list[Example], fe, tok, arch: str):
        self.examples, self.fe, self.tok, self.arch = examples, fe, tok, arch

    def __call__(self, indices: list[int]) -> dict:
        exs = [self.examples[i] for i in indices]
        batch = featurize(self.fe, self.arch, [load_audio(e.audio) for e in exs])
        labels = [torch.tensor(self.tok(e.text).input_ids, dtype=torch.long) for e in exs]
        batch["labels"] = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
        return batch

