"""The engine side of the JSON-lines protocol.

stdout carries one JSON object per line, nothing else; human logs go to
stderr. Event kinds: progress, checkpoint, item, warning, result, error. In a
run of several processes only rank 0 speaks: the others' events go to stderr
(training.Processes).
"""
import json
import os
import signal
import sys
import threading
import time

EXIT_INTERRUPTED = 75  # saved a resumable checkpoint on SIGTERM and stopped

_lock = threading.Lock()
_to_stderr = False  # a rank other than 0 of a multi-process run: rank 0 speaks for the run


class EngineError(Exception):
    """A failure with a message meant for the translation team."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


class Interrupted(Exception):
    """Raised after the engine saved its state on a stop request."""


def emit(event: str, **fields) -> None:
    line = json.dumps({"event": event, **fields}, ensure_ascii=False, default=_plain)
    out = sys.stderr if _to_stderr else sys.stdout
    with _lock:
        out.write(line + "\n")
        out.flush()


def speak_on_stderr() -> None:
    """From now on events go to the log (stderr), not to the worker."""
    global _to_stderr
    _to_stderr = True


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


PARENT_PID_ENV = "GPU_WORKER_PARENT_PID"


def watch_parent(interval: float = 0.5) -> None:
    """Stop the whole process group soon after the worker that started us is gone.

    The worker passes its pid; a launcher such as torchrun may sit between
    it and us, so that pid is watched, and our own parent dying (re-parenting)
    counts too. Quiet engines (a long evaluation) would otherwise run on
    until their next write to the closed pipe. A forked watchdog does the
    same from outside, so the group still goes when this process is wedged
    or was killed first (the kernel's parent-death signal).
    """
    raw = os.environ.get(PARENT_PID_ENV, "")
    if not raw.isdigit():
        return
    worker, parent, engine = int(raw), os.getppid(), os.getpid()
    born = _process_start(worker)
    if born is None:
        _stop_group(worker)
    if hasattr(os, "fork") and os.fork() == 0:  # before any thread exists
        _watchdog(worker, born, engine, interval)

    def loop():
        while True:
            time.sleep(interval)
            if os.getppid() != parent or _process_start(worker) != born:
                _stop_group(worker)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def _watchdog(worker: int, born, engine: int, interval: float) -> None:
    """The forked watcher: stops the group when the worker is gone, ends with the engine."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the worker reads the engine's pipes until every writer is gone
            os.dup2(null, fd)
        while os.getppid() == engine:
            time.sleep(interval)
            if _process_start(worker) != born:
                os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(0)


def _process_start(pid: int):
    """When pid started (so a reused pid is not mistaken for it); None once it exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: existence is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped
        return None
    return int(fields[19])


def _stop_group(pid: int) -> None:
    try:
        log(f"the worker (pid {pid}) is gone: stopping the engine")
    except (OSError, ValueError):  # the log pipe went with the worker
        pass
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(1)


class ETA:
    """Seconds left from the mean time per unit of work so far."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.start_done, self.t0 = total, done, time.monotonic()

    def __call__(self, done: int) -> float | None:
        worked = done - self.start_done
        if worked <= 0:
            return None
        return (time.monotonic() - self.t0) / worked * max(self.total - done, 0)


class Pace:
    """When a progress event is due: every `steps` steps, and at the latest
    `seconds` after the last one, so the worker can show a person how far a
    job is (a console line every 8–10 s) even when steps are slow."""

    def __init__(self, steps: int, seconds: float = 2.0, clock=time.monotonic):
        self.steps, self.seconds, self.clock = max(1, steps), seconds, clock
        self.last = clock()

    def due(self, step: int) -> bool:
        now = self.clock()
        if step % self.steps == 0 or now - self.last >= self.seconds:
            self.last = now
            return True
        return False
