"""Grapheme symbol table built from the training text.

The languages we serve have no phonemiser, so the model reads Unicode
graphemes: NFC-normalised base characters with their combining marks kept
together. The table lives in every checkpoint; fine-tuning appends new
symbols (old indices never move) and inference maps an unknown grapheme
deterministically (base letter without marks, other case, else <unk>).
"""
import re
import unicodedata

BLANK = "<blank>"  # index 0: padding and the blank between graphemes
UNK = "<unk>"
RESERVED = (BLANK, UNK)
_SPACES = re.compile(r"\s+")
_JOINERS = {"\u200d", "\u200c"}  # zero-width joiner / non-joiner glue graphemes together


def normalize(text: str, lowercase: bool = False) -> str:
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return text.lower() if lowercase else text


def graphemes(text: str) -> list[str]:
    """Splits NFC text into base characters with their combining marks attached."""
    out: list[str] = []
    glue = False
    for ch in text:
        if out and (glue or unicodedata.category(ch).startswith("M") or ch in _JOINERS):
            out[-1] += ch
        else:
            out.append(ch)
        glue = ch == "\u200d"
    return out


class SymbolTable:
    def __init__(self, symbols: list[str], lowercase: bool = False, add_blank: bool = True):
        if list(symbols[:len(RESERVED)]) != list(RESERVED):
            raise ValueError("symbol table must start with the reserved symbols")
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.lowercase = lowercase
        self.add_blank = add_blank

    @classmethod
    def build(cls, texts, lowercase: bool = False, add_blank: bool = True) -> "SymbolTable":
        table = cls(list(RESERVED), lowercase, add_blank)
        table.extend(texts)
        return table

    def extend(self, texts) -> list[str]:
        """Appends graphemes not yet in the table (sorted, so runs are reproducible)."""
        seen = set()
        for t in texts:
            seen.update(graphemes(normalize(t, self.lowercase)))
        new = sorted(seen - set(self.index))
        for s in new:
            self.index[s] = len(self.symbols)
            self.symbols.append(s)
        return new

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> tuple[list[int], dict[str, str]]:
        """Returns symbol ids and {unknown grapheme: what it was read as}."""
        ids, unknown = [], {}
        for g in graphemes(normalize(text, self.lowercase)):
            i = self.index.get(g)
            if i is None:
                sub = self._fallback(g)
                unknown[g] = sub
                i = self.index[sub]
            ids.append(i)
        if self.add_blank:
            spaced = [0] * (2 * len(ids) + 1)
            spaced[1::2] = ids
            ids = spaced
        return ids, unknown

    def _fallback(self, g: str) -> str:
        base = "".join(c for c in unicodedata.normalize("NFD", g)
                       if not unicodedata.category(c).startswith("M") and c not in _JOINERS)
        base = unicodedata.normalize("NFC", base)
        for cand in (base, g.lower(), g.upper(), base.lower(), base.upper()):
            if cand and cand in self.index and cand not in RESERVED:
                return cand
        return UNK

    def to_dict(self) -> dict:
        return {"symbols": self.symbols, "lowercase": self.lowercase, "add_blank": self.add_blank}

    @classmethod
    def from_dict(cls, d: dict) -> "SymbolTable":
        return cls(d["symbols"], d.get("lowercase", False), d.get("add_blank", True))
