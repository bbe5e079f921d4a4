"""The n-gram language model of a project: built from its verse text, packed beside
the model the way pyctcdecode and transformers' Wav2Vec2ProcessorWithLM load it:

    alphabet.json                   the decoder's labels, in output-id order
    language_model/attrs.json       alpha, beta, unk_score_offset, score_boundary
    language_model/unigrams.txt     the known words
    language_model/lm.arpa          the model (interpolated modified Kneser-Ney)

Held-out verses (validation and test cells) are left out of the LM text so that
held-out figures stay honest.

Loading reads only these files, all text: the model must be ARPA text (kenlm's
binary format is memory-mapped with little checking, so a binary file from a
project is refused) and the JSON files stay within the JSON caps. A refused or
broken language model is left out with a warning: decoding falls back to greedy.
"""
import json
import os
import shutil
import time

from .. import events, untrusted
from ..events import EngineError
from . import ngram, scoring
from .decode import Beam, Labels
from .text import normalize

LM_DIR = "language_model"
ALPHABET = "alphabet.json"
ARPA = "lm.arpa"
ARPA_HEAD = "\\data\\"  # the first line of an ARPA text model
# alpha weighs the LM against the acoustic model, beta rewards each word (longer outputs)
GRID = [(a, b) for a in (0.3, 0.6, 1.0) for b in (0.5, 2.0)]
TUNING_BEAM = 16  # narrower than decoding: the grid only has to rank settings


def read_corpus(path: str, exclude_cells: set[str]) -> tuple[list[str], int]:
    """Verse texts of a JSON-lines file {"cell_id", "text"}: (texts, how many excluded)."""
    if not os.path.exists(path):
        raise EngineError(f"lm_corpus not found: {path}")
    texts, excluded = [], 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EngineError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("text", ""), str):
                raise EngineError(f"{path}:{n}: each line must be an object with a \"text\" string")
            if str(row.get("cell_id", "")) in exclude_cells:
                excluded += 1
                continue
            if row.get("text", "").strip():
                texts.append(row["text"])
    return texts, excluded


def build(texts: list[str], norm: dict, order: int, directory: str) -> tuple[str, list[str], dict]:
    """Writes the ARPA file under directory: (path, unigrams, info)."""
    t0 = time.monotonic()
    sentences = [s.split() for s in (normalize(t, **norm) for t in texts) if s]
    if not sentences:
        raise EngineError("the language model has no text to learn from")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ARPA)
    info = ngram.write_arpa(sentences, order, path)
    unigrams = sorted({w for s in sentences for w in s})
    info.update(sentences=len(sentences), seconds=round(time.monotonic() - t0, 2),
                arpa_bytes=os.path.getsize(path))
    return path, unigrams, info


def make_decoder(labels: Labels, arpa: str, unigrams: list[str], alpha: float, beta: float):
    from pyctcdecode import build_ctcdecoder

    return build_ctcdecoder(labels.for_beam_search(), kenlm_model_path=arpa, unigrams=unigrams,
                            alpha=alpha, beta=beta)


def tune(decoder, labels: Labels, logprobs, refs: list[str], beam_width: int = TUNING_BEAM) -> tuple:
    """The (alpha, beta, CER) of the grid with the lowest CER on the given held-out set."""
    best = None
    for alpha, beta in GRID:
        decoder.reset_params(alpha=alpha, beta=beta)
        cer = scoring.cer(Beam(decoder, labels, min(beam_width, TUNING_BEAM))(logprobs), refs)
        if best is None or cer < best[2]:
            best = (alpha, beta, cer)
    decoder.reset_params(alpha=best[0], beta=best[1])
    return best


def save(decoder, directory: str) -> None:
    remove(directory)
    decoder.save_to_dir(directory)  # alphabet.json + language_model/


def remove(directory: str) -> None:
    shutil.rmtree(os.path.join(directory, LM_DIR), ignore_errors=True)
    if os.path.exists(os.path.join(directory, ALPHABET)):
        os.unlink(os.path.join(directory, ALPHABET))


def load(directory: str, labels: Labels, shown: str | None = None):
    """The decoder packed with a model, or None (no LM, or one that cannot load: warned).
    `shown` names the model in messages (directory may be an unpacked copy)."""
    if not os.path.isdir(os.path.join(directory, LM_DIR)):
        return None
    try:
        check_files(directory, shown or directory)  # never hands kenlm anything but ARPA text
        from pyctcdecode import BeamSearchDecoderCTC

        decoder = BeamSearchDecoderCTC.load_from_dir(directory)
    except EngineError as e:  # refused: transcription goes on without it
        events.warning(f"language model not loaded, decoding greedily: {e}")
        return None
    except Exception as e:  # noqa: BLE001 - a broken LM must not stop transcription
        events.warning(f"language model not loaded, decoding greedily: {type(e).__name__}: {e}")
        return None
    want = labels.for_beam_search()
    if decoder._alphabet.labels[:len(want)] != want:
        events.warning("language model alphabet does not match the model's vocabulary; decoding greedily")
        return None
    return decoder


def check_files(directory: str, shown: str) -> None:
    """The packed LM holds alphabet.json, attrs.json, unigrams.txt and one ARPA text file."""
    lm_dir = os.path.join(directory, LM_DIR)
    names = sorted(n for n in os.listdir(lm_dir) if not n.startswith((".", "__")))
    models = [n for n in names if n not in ("attrs.json", "unigrams.txt")]
    if len(models) != 1 or not models[0].endswith(".arpa"):
        raise untrusted.refused(shown, f"{LM_DIR}/ must hold attrs.json, unigrams.txt and one "
                                f".arpa text model, not {names}")
    with open(os.path.join(lm_dir, models[0]), "rb") as f:
        head = f.read(4096).lstrip()
    if not head.startswith(ARPA_HEAD.encode()):
        raise untrusted.refused(shown, f"{LM_DIR}/{models[0]} is not ARPA text")
    for name in (os.path.join(LM_DIR, "attrs.json"), ALPHABET):
        if os.path.exists(os.path.join(directory, name)):
            untrusted.read_json(os.path.join(directory, name), f"{shown}: {name}")
