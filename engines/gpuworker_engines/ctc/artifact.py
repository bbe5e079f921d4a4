"""The trained ASR model as ONE file for upload: an uncompressed tar of the model
folder (weights or adapter, feature extractor, tokenizer + vocab.json, README.md
model card, optional language_model/ + alphabet.json and transmorgrifier.tm) plus
card.json (metrics, config, architecture) for the engines themselves.

Every file in it is data: weights as safetensors, configs and vocabulary as JSON,
the language model as ARPA text, the post-corrector as a zip of JSON and catboost
models. An artifact comes back from a project (transcription, continuing a model),
so unpacking is strict (untrusted.extract: regular files and folders only, inside
the folder, within the size and member caps) and the unpacked folder must hold no
pickle-based weights (pytorch_model.bin, *.pt) and only JSON within the JSON caps.
"""
import io
import json
import os
import shutil
import tarfile
import time

from .. import untrusted
from ..checkpoint import atomic_open
from ..events import EngineError

NAME = "asr_model.tar"
CARD = "card.json"
README = "README.md"


def pack(model_dir: str, out_path: str, card: dict) -> str:
    """Writes the tar next to out_path, fsyncs it, then renames it into place."""
    with atomic_open(out_path) as f:
        with tarfile.open(fileobj=f, mode="w") as tar:  # weights barely compress
            for name in sorted(os.listdir(model_dir)):
                if name != CARD and not name.startswith("."):
                    tar.add(os.path.join(model_dir, name), arcname=name)
            data = json.dumps(card, ensure_ascii=False, indent=1, default=str).encode()
            info = tarfile.TarInfo(CARD)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out_path


def unpack(src: str, into: str) -> str:
    """A folder to load the model from: src itself when it is a folder, else the archive
    (tar, or zip) extracted into `into`. Either passes untrusted.check_tree."""
    if os.path.isdir(src):
        untrusted.check_tree(src, src)
        if not _is_model_dir(src):
            raise EngineError(f"{src} is not an ASR model folder (no config.json or card.json)")
        return src
    if not os.path.exists(src):
        raise EngineError(f"ASR model not found: {src}")
    untrusted.extract(src, into, src)
    try:
        untrusted.check_tree(into, src)
        if not _is_model_dir(into):
            raise EngineError(f"{src} is not an ASR model artifact (no config.json or card.json inside)")
    except EngineError:
        shutil.rmtree(into, ignore_errors=True)  # nothing refused stays on disk
        raise
    return into


def _is_model_dir(d: str) -> bool:
    return any(os.path.exists(os.path.join(d, n)) for n in ("config.json", CARD))


def read_card(directory: str) -> dict:
    """The card of an unpacked artifact ({} without one); callers name the artifact in errors
    (untrusted.shown_as)."""
    path = os.path.join(directory, CARD)
    if not os.path.exists(path):
        return {}
    card = untrusted.read_json(path)
    return card if isinstance(card, dict) else {}


def write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))
    os.chmod(path, 0o644)  # a document to read, not a secret
