"""Training examples: checks, the train / validation / test split, length-grouped
batches, collation."""
import random
from dataclasses import dataclass

import numpy as np
import torch

from .. import dataset, events
from ..events import EngineError
from .audio import duration, featurize, is_silent, load_audio
from .text import normalize


@dataclass
class Example:
    id: str
    text: str  # normalised: what the CTC model learns
    original: str  # as written in the project: what post-correction aims for
    audio: str
    duration: float
    cell_id: str = ""


def prepare(dataset_dir: str, norm: dict, max_duration_s: float) -> tuple[list[Example], list[dict]]:
    """Reads the dataset and drops unusable items: returns (examples, skipped with reasons)."""
    items = dataset.load(dataset_dir, need_audio=True, need_text=True)
    examples, skipped = [], []
    for it in items:
        text = normalize(it.text, **norm)
        if not text:
            skipped.append({"id": it.id, "reason": "text is empty after normalisation"})
            continue
        seconds = duration(it.audio)
        if seconds > max_duration_s:
            skipped.append({"id": it.id, "reason": f"audio longer than {max_duration_s:g}s"})
            continue
        if is_silent(load_audio(it.audio)):
            skipped.append({"id": it.id, "reason": "audio is silent"})
            continue
        examples.append(Example(it.id, text, it.text.strip(), it.audio, seconds, it.cell_id or it.id))
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


def split(examples: list, val_split: float, test_split: float, seed: int) -> tuple[list, list, list]:
    """(train, validation, test), a pure function of the seed.

    From 4 items on, a non-zero share gets at least one item, so even a tiny set has a
    held-out item for model selection and one for the report; below 4 everything
    trains. Training always keeps at least half the items.
    """
    n = len(examples)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test, n_val = int(round(test_split * n)), int(round(val_split * n))
    if n >= 4:
        n_test = max(1, n_test) if test_split > 0 else 0
        n_val = max(1, n_val) if val_split > 0 else 0
    else:
        n_test = n_val = 0
    while n - n_test - n_val < max(1, (n + 1) // 2) and (n_test or n_val):
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    test = [examples[i] for i in sorted(order[:n_test])]
    val = [examples[i] for i in sorted(order[n_test:n_test + n_val])]
    train = [examples[i] for i in sorted(order[n_test + n_val:])]
    return train, val, test


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
    """Turns a list of example indices into model inputs plus -100-padded labels."""

    def __init__(self, examples: list[Example], fe, tok):
        self.examples, self.fe, self.tok = examples, fe, tok

    def __call__(self, indices: list[int]) -> dict:
        exs = [self.examples[i] for i in indices]
        batch = featurize(self.fe, [load_audio(e.audio) for e in exs])
        labels = [torch.tensor(self.tok(e.text).input_ids, dtype=torch.long) for e in exs]
        batch["labels"] = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
        return batch
