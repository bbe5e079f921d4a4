"""Text normalisation and the character vocabulary built from training text.

Cleaning keeps every letter of every script: only control characters, the
byte-order mark and bidirectional formatting marks are dropped. Zero-width
joiners (ZWJ/ZWNJ: Persian, Urdu, Indic spellings) and combining marks stay.

A fresh vocabulary has the CTC blank [PAD] at id 0, [UNK] at 1 and the word
delimiter "|" (a space) at 2, as Wav2Vec2CTCTokenizer expects; a published
vocabulary (MMS) keeps its own special-token names.
"""
import collections
import json
import re
import unicodedata

from .. import untrusted
from ..events import EngineError

PAD, UNK, DELIM = "[PAD]", "[UNK]", "|"
# apostrophes often spell a glottal stop in minority-language orthographies: keep them
_KEEP_PUNCT = {"'", "\u2019", "\u02bc"}
_BOM = "\ufeff"
# direction marks and embeddings: invisible layout hints, never part of a spelling
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = re.compile(r"\s+")
_SPECIAL = re.compile(r"^(<[^<>\s]+>|\[[^\[\]\s]+\])$")
_BLANK = re.compile(r"^[<\[]pad[>\]]$", re.IGNORECASE)
_UNKNOWN = re.compile(r"^[<\[]unk[>\]]$", re.IGNORECASE)


def normalize(text: str, lowercase: bool = True, remove_punctuation: bool = True,
              remove_numbers: bool = False, **_ignored) -> str:
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or ch == DELIM:  # the delimiter is reserved for spaces
            out.append(" ")
        elif cat == "Cc" or ch == _BOM or ch in _BIDI:
            continue
        elif remove_punctuation and cat.startswith("P") and ch not in _KEEP_PUNCT:
            out.append(" ")  # "word,word" must stay two words
        elif remove_numbers and cat.startswith("N"):
            out.append(" ")
        else:
            out.append(ch)
    return _SPACES.sub(" ", "".join(out)).strip()


def build(texts: list[str], min_char_count: int = 1) -> tuple[dict[str, int], list[str]]:
    """Vocabulary from already-normalised texts: returns (token -> id, dropped chars)."""
    counts = collections.Counter(ch for t in texts for ch in t if ch != " ")
    kept = sorted(ch for ch, n in counts.items() if n >= max(1, min_char_count))
    dropped = sorted(ch for ch, n in counts.items() if n < max(1, min_char_count))
    vocab = {PAD: 0, UNK: 1, DELIM: 2}
    for ch in kept:
        vocab[ch] = len(vocab)
    return vocab, dropped


def extend(base: dict[str, int], new: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """base's ids unchanged, letters only in new appended after them: (vocab, new letters).

    new's special tokens are not letters: a base with its own names for them keeps those.
    """
    out = dict(base)
    added = []
    for tok in new:
        if tok not in out and not is_special(tok) and tok != DELIM:
            out[tok] = len(out)
            added.append(tok)
    return out, added


def is_special(token: str) -> bool:
    return bool(_SPECIAL.match(token))


def specials(vocab: dict[str, int]) -> dict:
    """The names a vocabulary uses for blank, unknown and the word delimiter, plus its
    other special tokens (e.g. MMS's <s> and </s>)."""
    pad = next((t for t in vocab if _BLANK.match(t)), None)
    unk = next((t for t in vocab if _UNKNOWN.match(t)), None)
    if pad is None:
        raise ValueError("vocabulary has no padding (CTC blank) token")
    others = [t for t in vocab if is_special(t) and t not in (pad, unk)]
    return {"pad": pad, "unk": unk, "delim": DELIM, "others": others}


def is_ctc_vocab(vocab) -> bool:
    """A flat token -> id map with ids 0..n-1, a blank and the delimiter."""
    if not isinstance(vocab, dict) or not vocab or DELIM not in vocab:
        return False
    if not all(isinstance(v, int) for v in vocab.values()):
        return False
    if sorted(vocab.values()) != list(range(len(vocab))):
        return False
    return any(_BLANK.match(t) for t in vocab)


def load(path: str, shown: str | None = None) -> dict[str, int]:
    """A vocab.json (read within the JSON caps: it may come from a project's artifact)."""
    vocab = untrusted.read_json(path, shown)
    if not isinstance(vocab, dict):
        raise EngineError(f"{shown or path}: not a vocabulary (a JSON object of token -> id)")
    return vocab


def save(vocab: dict[str, int], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=1)


def tokenizer(vocab_path: str):
    """A Wav2Vec2CTCTokenizer for a flat vocab.json, with the vocabulary's own special names."""
    from transformers import Wav2Vec2CTCTokenizer

    sp = specials(load(vocab_path))
    return Wav2Vec2CTCTokenizer(vocab_path, unk_token=sp["unk"] or UNK, pad_token=sp["pad"],
                                word_delimiter_token=DELIM, bos_token=None, eos_token=None)
