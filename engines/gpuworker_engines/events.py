"""The engine side of the JSON-lines protocol.

stdout carries one JSON object per line, nothing else; human logs go to
stderr. Event kinds: progress, checkpoint, item, warning, result, error.
"""
import json
import signal
import sys
import threading
import time

EXIT_INTERRUPTED = 75  # saved a resumable checkpoint on SIGTERM and stopped

_lock = threading.Lock()


class EngineError(Exception):
    """A failure with a message meant for the translation team."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


class Interrupted(Exception):
    """Raised after the engine saved its state on a stop request."""


def emit(event: str, **fields) -> None:
    line = json.dumps({"event": event, **fields}, ensure_ascii=False, default=_plain)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _plain(v):
    if hasattr(v, "item"):  # numpy / torch scalars
        return v.item()
    return str(v)


def error(message: str, kind: str | None = None) -> None:
    fields = {"message": message}
    if kind:
        fields["kind"] = kind
    emit("error", **fields)


def warning(message: str) -> None:
    emit("warning", message=message)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


class StopFlag:
    """Set by SIGTERM/SIGINT; training loops poll it between steps."""

    def __init__(self):
        self._event = threading.Event()
        self.signal = None

    def set(self, signum=None):
        self.signal = signum
        self._event.set()

    def __bool__(self):
        return self._event.is_set()


def install_stop_handler() -> StopFlag:
    flag = StopFlag()

    def handler(signum, _frame):
        log(f"received signal {signum}: stopping after the current step")
        flag.set(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag


class ETA:
    """Seconds left from the mean time per unit of work so far."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.start_done, self.t0 = total, done, time.monotonic()

    def __call__(self, done: int) -> float | None:
        worked = done - self.start_done
        if worked <= 0:
            return None
        return (time.monotonic() - self.t0) / worked * max(self.total - done, 0)
