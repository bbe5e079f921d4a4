"""English text -> IPA characters, the pipeline the published checkpoint reads:
ASCII and lower case, abbreviations and numbers spelled out, the CMU dictionary
through eng_to_ipa (unknown words stay as letters with '*'), then the table's
spellings (dark l, ɹ, dʒ, tʃ, …)."""
import re

_ABBREVIATIONS = [(re.compile(rf"\b{short}\.", re.IGNORECASE), full) for short, full in (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"),
    ("rev", "reverend"), ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"),
    ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"),
    ("ft", "fort"))]
_THOUSANDS = re.compile(r"([0-9][0-9,]+[0-9])")
_POUNDS = re.compile(r"£([0-9,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9]+)")
_DECIMAL = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_INTEGER = re.compile(r"[0-9]+")
_SPACES = re.compile(r"\s+")
# an l before a space or the end, with no vowel in between, is dark
_DARK_L = re.compile(r"l([^aeiouæɑɔəɛɪʊ ]*(?: |$))")
_RESPELL = (("r", "ɹ"), ("ʤ", "dʒ"), ("ʧ", "tʃ"))

_inflect = None


def _words(n, **kw) -> str:
    global _inflect
    if _inflect is None:
        import inflect
        _inflect = inflect.engine()
    return _inflect.number_to_words(n, **kw)


def _dollars(m) -> str:
    parts = m.group(1).split(".")
    if len(parts) > 2:
        return m.group(1) + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    d_unit = "dollar" if dollars == 1 else "dollars"
    c_unit = "cent" if cents == 1 else "cents"
    if dollars and cents:
        return f"{dollars} {d_unit}, {cents} {c_unit}"
    if dollars:
        return f"{dollars} {d_unit}"
    if cents:
        return f"{cents} {c_unit}"
    return "zero dollars"


def _integer(m) -> str:
    n = int(m.group(0))
    if not 1000 < n < 3000:
        return _words(n, andword="")
    # years: read in pairs
    if n == 2000:
        return "two thousand"
    if 2000 < n < 2010:
        return "two thousand " + _words(n % 100)
    if n % 100 == 0:
        return _words(n // 100) + " hundred"
    return _words(n, andword="", zero="oh", group=2).replace(", ", " ")


def normalize_numbers(text: str) -> str:
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _words(m.group(0)), text)
    return _INTEGER.sub(_integer, text)


def to_ipa(text: str) -> list[str]:
    """English text -> list of single IPA characters (unknown words spelled, starred)."""
    import eng_to_ipa
    from unidecode import unidecode

    text = unidecode(text).lower()
    for pattern, full in _ABBREVIATIONS:
        text = pattern.sub(full, text)
    text = eng_to_ipa.convert(normalize_numbers(text))
    text = _SPACES.sub(" ", text)
    text = _DARK_L.sub(lambda m: "ɫ" + m.group(1), text)
    for a, b in _RESPELL:
        text = text.replace(a, b)
    return list(text.replace("...", "…"))
