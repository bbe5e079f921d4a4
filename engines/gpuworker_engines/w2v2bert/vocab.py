"""Text normalisation and the character vocabulary built from training text.

The CTC blank is [PAD] (id 0), unknown characters map to [UNK] (id 1) and the
word delimiter "|" stands for a space, as the Wav2Vec2CTCTokenizer expects.
"""
import collections
import json
import re
import unicodedata

PAD, UNK, DELIM = "[PAD]", "[UNK]", "|"
# apostrophes often spell a glottal stop in minority-language orthographies: keep them
_KEEP_PUNCT = {"'", "\u2019", "\u02bc"}
_SPACES = re.compile(r"\s+")


def normalize(text: str, lowercase: bool = True, remove_punctuation: bool = True,
              remove_numbers: bool = False, **_ignored) -> str:
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if remove_punctuation and cat.startswith("P") and ch not in _KEEP_PUNCT:
            out.append(" ")  # "word,word" must stay two words
        elif remove_numbers and cat.startswith("N"):
            out.append(" ")
        elif ch == DELIM or cat.startswith("C"):  # the delimiter is reserved; drop control chars
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


def extend(base: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """base's ids unchanged, characters only in new appended after them."""
    out = dict(base)
    for tok in new:
        if tok not in out:
            out[tok] = len(out)
    return out


def save(vocab: dict[str, int], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=1)
