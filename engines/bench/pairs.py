"""Verse-like (ASR output, true text) pairs with systematic and random errors, for
post-correction tests and benchmarks."""
import random

SYLLABLES = ["ka", "te", "ri", "so", "mu", "the", "ee", "sha", "lo", "na", "be", "di", "go", "th", "wa"]


def make_pairs(n: int, seed: int = 0, vocab: int = 1500) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(vocab)]
    pairs = []
    for _ in range(n):
        w = [rng.choice(words) for _ in range(rng.randint(18, 30))]
        true = " ".join(w)
        true = true[0].upper() + true[1:] + "."
        asr = true.lower().rstrip(".").replace("ee", "i").replace("th", "d")  # what the recogniser hears
        asr = "".join(c for c in asr if rng.random() > 0.02)  # and a few dropped letters
        pairs.append((asr, true))
    return pairs
