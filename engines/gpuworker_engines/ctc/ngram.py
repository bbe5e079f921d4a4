"""A word n-gram language model with interpolated modified Kneser-Ney smoothing,
written as an ARPA file that kenlm loads (Chen & Goodman 1998, section 3.5).

Counts: the highest order and n-grams that begin with <s> keep their raw counts;
every other lower-order n-gram counts the distinct words seen before it (its
continuation count). Each order has three discounts D1, D2, D3+ from its
count-of-counts, and

    p(w | h) = (a(h w) - D(a(h w))) / sum_v a(h v) + gamma(h) p(w | h')
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / sum_v a(h v)

where h' drops the oldest word of h and the unigram level interpolates with the
uniform distribution over the vocabulary (which gives <unk> its mass). In ARPA
terms the stored probability is the interpolated p and the back-off weight of a
context is its gamma, so a word unseen after h scores gamma(h) p(w | h').
"""
import collections
import math

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # for corpora too small for count-of-counts


def adjusted_counts(sentences: list[list[str]], order: int) -> list[dict[tuple, int]]:
    """tables[n - 1]: n-gram -> its raw or continuation count."""
    raw = collections.Counter()
    for words in sentences:
        s = [BOS] + [w for w in words if w not in (BOS, EOS, UNK)] + [EOS]
        for i in range(1, len(s)):
            raw[tuple(s[max(0, i - order + 1):i + 1])] += 1
    tables = [dict() for _ in range(order)]
    for gram, c in raw.items():  # full-length n-grams, or shorter ones that start at <s>
        tables[len(gram) - 1][gram] = c
    for n in range(order - 1, 0, -1):
        left = collections.Counter(gram[1:] for gram in tables[n])
        for gram, c in left.items():  # never starts with <s>: nothing precedes <s>
            tables[n - 1][gram] = c
    return tables


def discounts(counts) -> tuple[float, float, float]:
    nk = collections.Counter(min(c, 5) for c in counts)
    n1, n2, n3, n4 = (nk[k] for k in (1, 2, 3, 4))
    if not (n1 and n2 and n3 and n4):
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d[k] < k + 1 for k in range(3)):
        return FALLBACK_DISCOUNTS
    return d


def estimate(sentences: list[list[str]], order: int):
    """(probabilities per order, back-off weights per order, discounts per order)."""
    if order < 1:
        raise ValueError("order must be >= 1")
    tables = adjusted_counts(sentences, order)
    vocab_size = len(tables[0]) + 1  # the words and </s>, plus <unk>
    probs = [dict() for _ in range(order)]
    gammas = [dict() for _ in range(order)]  # gammas[n - 1][h]: weight of context h at order n
    ds = []
    for n in range(1, order + 1):
        table = tables[n - 1]
        d = discounts(table.values())
        ds.append(d)
        total = collections.defaultdict(int)
        kinds = collections.defaultdict(lambda: [0, 0, 0])
        for gram, a in table.items():
            total[gram[:-1]] += a
            kinds[gram[:-1]][min(a, 3) - 1] += 1
        for h, k in kinds.items():
            gammas[n - 1][h] = (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / total[h]
        for gram, a in table.items():
            h = gram[:-1]
            lower = probs[n - 2][gram[1:]] if n > 1 else 1.0 / vocab_size
            probs[n - 1][gram] = (a - d[min(a, 3) - 1]) / total[h] + gammas[n - 1][h] * lower
    probs[0][(UNK,)] = gammas[0][()] / vocab_size
    return probs, gammas, ds


def write_arpa(sentences: list[list[str]], order: int, path: str) -> dict:
    """Writes the model; returns sizes for the log and the model card."""
    probs, gammas, ds = estimate(sentences, order)
    # a context's back-off weight sits on the n-gram that spells it
    bows = [dict() for _ in range(order)]
    for n in range(2, order + 1):
        for h, g in gammas[n - 1].items():
            bows[n - 2][h] = g
    if order > 1 and (BOS,) in bows[0]:
        probs[0][(BOS,)] = None  # never predicted; present as a context only
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n in range(order):
            f.write(f"ngram {n + 1}={len(probs[n])}\n")
        for n in range(order):
            f.write(f"\n\\{n + 1}-grams:\n")
            for gram in sorted(probs[n]):
                p = probs[n][gram]
                logp = -99.0 if p is None else math.log10(p)
                line = f"{logp:.7g}\t{' '.join(gram)}"
                if n + 1 < order and gram in bows[n]:
                    line += f"\t{math.log10(bows[n][gram]):.7g}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return {"order": order, "ngrams": [len(p) for p in probs], "words": sum(1 for g in probs[0] if g[0] not in (BOS, EOS, UNK)),
            "discounts": [[round(x, 4) for x in d] for d in ds]}
