"""The trained ASR model as ONE file for upload: an uncompressed tar of the model
folder (weights, feature extractor, tokenizer + vocab.json, optional
transmorgrifier.tm) plus card.json (metrics, config, architecture).
"""
import io
import json
import os
import tarfile

from ..checkpoint import atomic_open
from ..events import EngineError

NAME = "asr_model.tar"
CARD = "card.json"


def pack(model_dir: str, out_path: str, card: dict) -> str:
    """Writes the tar next to out_path, fsyncs it, then renames it into place."""
    with atomic_open(out_path) as f:
        with tarfile.open(fileobj=f, mode="w") as tar:  # weights barely compress
            for name in sorted(os.listdir(model_dir)):
                if name != CARD:
                    tar.add(os.path.join(model_dir, name), arcname=name)
            data = json.dumps(card, ensure_ascii=False, indent=1, default=str).encode()
            info = tarfile.TarInfo(CARD)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out_path


def unpack(src: str, into: str) -> str:
    """A folder to load the model from: src itself when it is a folder, else the tar extracted."""
    if os.path.isdir(src):
        if not os.path.exists(os.path.join(src, "config.json")):
            raise EngineError(f"{src} is not an ASR model folder (no config.json)")
        return src
    if not os.path.exists(src):
        raise EngineError(f"ASR model not found: {src}")
    try:
        with tarfile.open(src, mode="r:*") as tar:
            tar.extractall(into, filter="data")  # refuses absolute paths and links out of the folder
    except (tarfile.TarError, OSError) as e:
        raise EngineError(f"unpack ASR model {src}: {e}") from None
    if not os.path.exists(os.path.join(into, "config.json")):
        raise EngineError(f"{src} is not an ASR model artifact (no config.json inside)")
    return into


def read_card(directory: str) -> dict:
    path = os.path.join(directory, CARD)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
