"""From CTC log-probabilities to text: greedy, or beam search with an n-gram LM.

Neither ever emits a special token: the unknown and other special tokens are
masked out of every frame before decoding (the next best letter wins), and any
special token left in a text is removed.
"""
import re

import numpy as np

from .text import DELIM, specials

UNK_LABEL = "\u2047"  # how pyctcdecode spells the unknown token
# the special tokens of Wav2Vec2 tokenizers, stripped from any text whatever the vocabulary
COMMON_SPECIALS = ["[PAD]", "[UNK]", "<pad>", "<unk>", "<s>", "</s>"]
MASKED = -1e4  # a log-probability no beam and no argmax ever picks


class Labels:
    """What each output id means, from the tokenizer's vocabulary."""

    def __init__(self, vocab: dict[str, int]):
        sp = specials(vocab)
        self.tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        self.blank = vocab[sp["pad"]]
        self.masked = [vocab[t] for t in [sp["unk"], *sp["others"]] if t is not None]
        found = [t for t in (sp["pad"], sp["unk"], *sp["others"]) if t]
        self.special_texts = sorted(set(found + COMMON_SPECIALS + [UNK_LABEL]), key=len, reverse=True)
        self._strip = re.compile("|".join(re.escape(t) for t in self.special_texts), re.IGNORECASE)

    def for_beam_search(self) -> list[str]:
        """pyctcdecode's alphabet: blank "", delimiter " ", unknown as its own symbol."""
        out = []
        for i, t in enumerate(self.tokens):
            if i == self.blank:
                out.append("")
            elif t == DELIM:
                out.append(" ")
            elif i in self.masked and re.match(r"^[<\[]unk[>\]]$", t, re.IGNORECASE):
                out.append(UNK_LABEL)
            else:
                out.append(t)
        return out

    def clean(self, text: str) -> str:
        return " ".join(self._strip.sub(" ", text).split())

    def mask(self, logprobs: np.ndarray) -> np.ndarray:
        if not self.masked:
            return logprobs
        out = np.array(logprobs, dtype=np.float32, copy=True)
        out[:, self.masked] = MASKED
        return out


class Greedy:
    name = "greedy"

    def __init__(self, labels: Labels):
        self.labels = labels

    def __call__(self, logprobs: list[np.ndarray]) -> list[str]:
        out = []
        for lp in logprobs:
            ids = self.labels.mask(lp).argmax(-1) if len(lp) else []
            pieces, prev = [], -1
            for i in ids:  # merge repeats first, then drop blanks
                if i != prev and i != self.labels.blank:
                    pieces.append(self.labels.tokens[i])
                prev = i
            out.append(self.labels.clean("".join(pieces).replace(DELIM, " ")))
        return out


class Beam:
    """pyctcdecode beam search fused with the kenlm model (shallow fusion)."""

    name = "lm"

    def __init__(self, decoder, labels: Labels, beam_width: int = 64):
        self.decoder, self.labels, self.beam_width = decoder, labels, beam_width

    def __call__(self, logprobs: list[np.ndarray]) -> list[str]:
        out = []
        for lp in logprobs:
            if not len(lp):
                out.append("")
                continue
            text = self.decoder.decode(self.labels.mask(lp), beam_width=self.beam_width)
            out.append(self.labels.clean(text))
        return out
