"""Atomic checkpoint files and exact-resume RNG state (tensors and plain values only, so
that a checkpoint loads with weights_only=True)."""
import contextlib
import os
import random
import tempfile

import numpy as np
import torch

from .events import EngineError


@contextlib.contextmanager
def atomic_open(path: str):
    """A binary file that appears at `path` only once fully written and
    fsynced (temp file in the same folder, then rename); on error, nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path: str) -> None:
    """torch.save that never leaves a half-written file."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def rng_state() -> dict:
    """Every generator a step draws from, as tensors and plain values: the state travels
    in checkpoints that are loaded with weights_only=True."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
             "numpy": {"bit_generator": np_state["bit_generator"],
                       "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    np.random.set_state({"bit_generator": npy["bit_generator"],
                         "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": int(npy["pos"])},
                         "has_gauss": int(npy["has_gauss"]), "gauss": float(npy["gauss"])})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rotate(directory: str, prefix: str, keep: int) -> None:
    """Delete all but the newest `keep` files named <prefix>*.pt in directory."""
    files = sorted((f for f in os.listdir(directory) if f.startswith(prefix) and f.endswith(".pt")),
                   key=lambda f: os.path.getmtime(os.path.join(directory, f)))
    for f in files[:-keep] if keep > 0 else files:
        os.unlink(os.path.join(directory, f))


@contextlib.contextmanager
def blamed(path: str):
    """Errors while restoring from a checkpoint name it: its content did not fit."""
    try:
        yield
    except EngineError as e:
        if path in str(e):
            raise
        raise EngineError(f"{path}: {e}", kind=e.kind) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EngineError(f"{path}: not a resumable checkpoint of this engine "
                          f"({type(e).__name__}: {first})") from None
