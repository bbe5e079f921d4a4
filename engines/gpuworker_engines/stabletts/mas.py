"""Monotonic alignment search: the most likely monotonic, surjective mapping
of mel frames to text tokens (each token gets at least one contiguous run of
frames, in order). Dynamic programming over frames, vectorised over the batch
and the tokens."""
import numpy as np
import torch


def maximum_path_numpy(log_p: np.ndarray, x_lens, y_lens) -> np.ndarray:
    """log_p [B, Tx, Ty] -> 0/1 path [B, Tx, Ty]; entries past the lengths are 0."""
    log_p = np.asarray(log_p, dtype=np.float64)
    B, Tx, Ty = log_p.shape
    x_lens = np.asarray(x_lens, dtype=np.int64)
    y_lens = np.asarray(y_lens, dtype=np.int64)
    if np.any(x_lens > y_lens) or np.any(x_lens < 1):
        raise ValueError("each text needs at least one and at most as many tokens as frames")
    # value[:, i, j]: best score of frames 0..j with frame j on token i
    value = np.full((B, Tx, Ty), -np.inf)
    value[:, 0, 0] = log_p[:, 0, 0]
    neg = np.full((B, 1), -np.inf)
    for j in range(1, Ty):
        prev = value[:, :, j - 1]
        moved = np.concatenate([neg, prev[:, :-1]], axis=1)
        value[:, :, j] = log_p[:, :, j] + np.maximum(prev, moved)
    # backtrack from the last token on the last frame of each item
    path = np.zeros((B, Tx, Ty), dtype=np.float32)
    b = np.arange(B)
    i = x_lens - 1
    for j in range(Ty - 1, -1, -1):
        live = j < y_lens
        path[b[live], i[live], j] = 1.0
        if j == 0:
            break
        can_move = live & (i > 0)
        ii = np.maximum(i - 1, 0)
        move = can_move & ((i == j) | (value[b, ii, j - 1] > value[b, i, j - 1]))
        i = i - move.astype(np.int64)
    return path


@torch.no_grad()
def maximum_path(log_p: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    """Torch wrapper: log_p [B, Tx, Ty], masks [B, 1, T] -> path [B, Tx, Ty] on log_p's device."""
    x_lens = x_mask.sum((1, 2)).long().cpu().numpy()
    y_lens = y_mask.sum((1, 2)).long().cpu().numpy()
    path = maximum_path_numpy(log_p.float().cpu().numpy(), x_lens, y_lens)
    return torch.from_numpy(path).to(log_p.device)


def brute_force_path(log_p: np.ndarray) -> tuple[np.ndarray, float]:
    """Enumerates every monotonic alignment of one [Tx, Ty] matrix (tests only)."""
    from itertools import combinations
    Tx, Ty = log_p.shape
    best, best_path = -np.inf, None
    for cuts in combinations(range(1, Ty), Tx - 1):
        bounds = (0, *cuts, Ty)
        path = np.zeros((Tx, Ty), dtype=np.float32)
        for tok in range(Tx):
            path[tok, bounds[tok]:bounds[tok + 1]] = 1.0
        score = float((log_p * path).sum())
        if score > best:
            best, best_path = score, path
    return best_path, best
