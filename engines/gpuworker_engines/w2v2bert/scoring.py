"""Character and word error rates (edit distance over reference length)."""


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cer(hyps: list[str], refs: list[str]) -> float:
    errors = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r) for r in refs))


def wer(hyps: list[str], refs: list[str]) -> float:
    errors = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r.split()) for r in refs))
