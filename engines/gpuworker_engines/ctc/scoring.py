"""Character and word error rates (edit distance over reference length)."""


def edit_distance(a, b) -> int:
    """Levenshtein distance of two sequences, bit-parallel (Myers 1999, Hyyrö's form):
    one pass over b with a bit per position of a, fast enough for whole verses."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    m = len(a)
    mask, high = (1 << m) - 1, 1 << (m - 1)
    peq = {}
    for i, x in enumerate(a):
        peq[x] = peq.get(x, 0) | (1 << i)
    pv, mv, score = mask, 0, m
    for y in b:
        eq = peq.get(y, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask  # the top row grows by one per column: shift in a +1
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def cer(hyps: list[str], refs: list[str]) -> float:
    errors = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r) for r in refs))


def wer(hyps: list[str], refs: list[str]) -> float:
    errors = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r.split()) for r in refs))
