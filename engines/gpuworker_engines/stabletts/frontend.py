"""Text front-ends: text -> symbol ids with a blank (id 0) before, between and after.

ipa        the published symbols through the English IPA pipeline (english.py)
uroman     any script romanised with uroman, then ipa (for mostly non-Latin text)
graphemes  the data's own characters: the published table plus the graphemes it
           lacks appended after it, so every published embedding row keeps its id
auto       uroman when most letters of the texts are non-Latin, else ipa

What a front-end cannot map is left out of the ids and counted, never dropped
silently: encode() returns the counts, callers report them.
"""
import re
import unicodedata
from collections import Counter

from ..events import EngineError
from . import english

# The published 401-symbol table (list index = token id).
_CNM3_BASES = ("y n p x k l q w E b c z e f s j o i d m t h g v r a u I0 i0 uo o0 U0 v0 er A0 ai "
               "e0 sh an ou ch a0 N0 ao ve ir ng ua zh O0 ie E0 ia iE0 ang ng0 io0 iA0 uA0 ong "
               "oo0 uE0 vE0 ue0 ua0 iO0").split()
PUBLISHED_SYMBOLS = (["_"] + list(",.!?-~…'")
                     + list("NQabdefghijklmnopstuvwxyzɑæʃʑçɯɪɔɛɹðəɫɥɸʊɾʒθβŋɦ⁼ʰ`^#*=ˈˌ→↓↑ ")
                     + [f"{b}{tone}" for b in _CNM3_BASES for tone in range(1, 6)]
                     + ["<sil>", "<asp>"])
KINDS = ("ipa", "uroman", "graphemes")
PIPELINES = {  # what the ipa and uroman front-ends run, for the sidecar
    "ipa": "KdaiP/StableTTS v1.1 text/english.py english_to_ipa2 (eng-to-ipa 0.0.2, "
           "inflect, Unidecode), then the table lookup and blank interspersing",
    "uroman": "uroman 1.3.1.1 Uroman().romanize_string(text, lcode=None), then KdaiP/StableTTS "
              "v1.1 english_to_ipa2, the table lookup and blank interspersing",
}
_SPACES = re.compile(r"\s+")
_JOINERS = {"\u200d", "\u200c"}  # zero-width joiner / non-joiner glue graphemes together
_uroman = None


def romanize(text: str) -> str:
    global _uroman
    if _uroman is None:
        try:
            import uroman
        except ImportError:
            raise EngineError("frontend uroman needs the uroman package") from None
        _uroman = uroman.Uroman()  # loads its tables once (seconds)
    return _uroman.romanize_string(text, lcode=None)


def mostly_non_latin(texts) -> bool:
    """True when more than half of the letters (str.isalpha) are not Latin script."""
    letters = non_latin = 0
    for t in texts:
        for ch in t:
            if ch.isalpha():
                letters += 1
                non_latin += "LATIN" not in unicodedata.name(ch, "")
    return letters > 0 and non_latin * 2 > letters


# The graphemes rule, written into every sidecar so that code without this engine
# (KdaiP's, say) reproduces the ids; change the version with any change of graphemes().
SEGMENTATION = {
    "name": "gpuworker-graphemes", "version": 1,
    "unicode_version": unicodedata.unidata_version,
    "normalization": "NFC",
    "whitespace": "str.isspace",
    "attach_categories": ["Mn", "Mc", "Me"],
    "attach_code_points": ["U+200C", "U+200D"],
    "attach_after_code_points": ["U+200D"],
    "blank_id": 0,
    "steps": [
        "normalize the text to Unicode NFC",
        "replace every run of whitespace (the characters for which Python's str.isspace() "
        "is true) by one U+0020 SPACE, and remove it at both ends",
        "when lowercase is true, lower-case the text with Python's str.lower() (the full "
        "Unicode mapping; it is not normalized again)",
        "cut the text into units, reading code points from left to right: a code point "
        "joins the unit before it when its general category is one of attach_categories, "
        "when it is one of attach_code_points, or when the code point before it is one of "
        "attach_after_code_points; any other code point starts a new unit",
        "replace each unit that is an entry of symbols by its index; leave out the others",
        "put blank_id before, between and after the ids: n ids give 2n + 1 tokens",
    ],
}


def graphemes(text: str, lowercase: bool = True) -> list[str]:
    """NFC text, whitespace runs as one space, split into base characters with their
    combining marks attached (SEGMENTATION says the same in words)."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()
    if lowercase:
        text = text.lower()
    out: list[str] = []
    glue = False
    for ch in text:
        if out and (glue or unicodedata.category(ch).startswith("M") or ch in _JOINERS):
            out[-1] += ch
        else:
            out.append(ch)
        glue = ch == "\u200d"
    return out


class FrontEnd:
    def __init__(self, kind: str, symbols: list[str] | None = None, lowercase: bool = True):
        if kind not in KINDS:
            raise EngineError(f"unknown frontend {kind!r} (one of {', '.join(KINDS)})")
        self.kind, self.lowercase = kind, lowercase
        self.symbols = list(symbols if symbols is not None else PUBLISHED_SYMBOLS)
        if self.symbols[:len(PUBLISHED_SYMBOLS)] != PUBLISHED_SYMBOLS:
            raise EngineError("symbol table does not start with the 401 published symbols")
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def units(self, text: str) -> list[str]:
        """The front-end's output before the table lookup."""
        text = text.strip()
        if self.kind == "graphemes":
            return graphemes(text, self.lowercase)
        if self.kind == "uroman":
            text = romanize(text)
        return english.to_ipa(text)

    def encode(self, text: str) -> tuple[list[int], Counter]:
        """-> ids with interspersed blanks (2n + 1 of them) and the unmapped units."""
        ids, unmapped = [], Counter()
        for u in self.units(text):
            i = self.index.get(u)
            if i is None:
                unmapped[u] += 1
            else:
                ids.append(i)
        spaced = [0] * (2 * len(ids) + 1)
        spaced[1::2] = ids
        return spaced, unmapped

    def extend(self, texts) -> list[str]:
        """Graphemes only: appends the texts' graphemes the table lacks (sorted, so a
        run is reproducible); old ids never move."""
        seen = set()
        for t in texts:
            seen.update(graphemes(t, self.lowercase))
        new = sorted(seen - set(self.index))
        for s in new:
            self.index[s] = len(self.symbols)
            self.symbols.append(s)
        return new

    def to_dict(self) -> dict:
        """The table and, for graphemes, the whole rule: SEGMENTATION and every symbol of
        more than one code point that the rule can cut out (a per-character lookup, as
        KdaiP's cleaned_text_to_sequence does, would miss them)."""
        d = {"kind": self.kind, "symbols": self.symbols, "lowercase": self.lowercase}
        if self.kind == "graphemes":
            d["segmentation"] = SEGMENTATION
            d["multi_code_point_symbols"] = [
                {"id": i, "symbol": s, "code_points": [f"U+{ord(ch):04X}" for ch in s]}
                for i, s in enumerate(self.symbols) if len(s) > 1 and graphemes(s, False) == [s]]
        else:
            d["pipeline"] = PIPELINES[self.kind]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FrontEnd":
        seg = d.get("segmentation")
        if d.get("kind") == "graphemes" and seg is not None and \
                (seg.get("name"), seg.get("version")) != (SEGMENTATION["name"], SEGMENTATION["version"]):
            raise EngineError(f"graphemes rule {seg.get('name')}/{seg.get('version')} is not "
                              f"this engine's {SEGMENTATION['name']}/{SEGMENTATION['version']}")
        return cls(d["kind"], d.get("symbols"), d.get("lowercase", True))


def choose(requested: str, texts, base: FrontEnd | None) -> FrontEnd:
    """The front-end of a training run: requested kind (auto resolved on the texts),
    on the base model's symbol table; new graphemes appended for graphemes."""
    kind = requested
    if kind == "auto":
        if base is not None and base.kind == "graphemes":
            kind = "graphemes"
        else:
            kind = "uroman" if mostly_non_latin(texts) else "ipa"
    symbols = base.symbols if base is not None else None
    if kind != "graphemes" and symbols is not None and len(symbols) > len(PUBLISHED_SYMBOLS):
        raise EngineError(f"frontend {kind} needs the 401 published symbols; the base model "
                          f"reads graphemes ({len(symbols)} symbols)")
    fe = FrontEnd(kind, symbols, base.lowercase if base is not None else True)
    if kind == "graphemes":
        fe.extend(texts)
    return fe


def encode_all(fe: FrontEnd, texts) -> tuple[list[list[int]], dict[str, int]]:
    """Ids for each text and the unmapped characters of all of them, {char: count}."""
    ids, unmapped = [], Counter()
    for t in texts:
        i, u = fe.encode(t)
        ids.append(i)
        unmapped.update(u)
    return ids, dict(sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_unmapped(unmapped: dict[str, int], kind: str) -> str:
    shown = ", ".join(f"{c!r}×{n}" for c, n in list(unmapped.items())[:20])
    more = f" and {len(unmapped) - 20} more" if len(unmapped) > 20 else ""
    return f"frontend {kind} cannot map {sum(unmapped.values())} character(s), left out: {shown}{more}"
