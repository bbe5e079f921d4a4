"""The dataset folder the worker hands to engines.

<dir>/index.jsonl: one JSON object per line with id, cell_id, reference,
text, audio (path relative to <dir>, a mono 16-bit PCM WAV) and duration (s).
"""
import json
import os
from dataclasses import dataclass

from .events import EngineError


@dataclass
class Item:
    id: str
    text: str
    audio: str | None  # absolute path, or None for text-only items (synthesis)
    duration: float
    cell_id: str = ""
    reference: str = ""


def load(dataset_dir: str, need_audio: bool = True, need_text: bool = True) -> list[Item]:
    path = os.path.join(dataset_dir, "index.jsonl")
    if not os.path.exists(path):
        raise EngineError(f"dataset index missing: {path}")
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EngineError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or not row.get("id"):
                raise EngineError(f"{path}:{n}: each line must be an object with an \"id\"")
            text = row.get("text") or ""
            if need_text and not text.strip():
                raise EngineError(f"{path}:{n}: item {row['id']} has empty text")
            audio = row.get("audio")
            if audio:
                audio = os.path.join(dataset_dir, audio)
                if need_audio and not os.path.exists(audio):
                    raise EngineError(f"{path}:{n}: item {row['id']}: audio file missing: {audio}")
            elif need_audio:
                raise EngineError(f"{path}:{n}: item {row['id']} has no audio")
            items.append(Item(id=str(row["id"]), text=text, audio=audio,
                              duration=float(row.get("duration") or 0.0),
                              cell_id=row.get("cell_id", ""), reference=row.get("reference", "")))
    if not items:
        raise EngineError(f"dataset {dataset_dir} has no items")
    return items
