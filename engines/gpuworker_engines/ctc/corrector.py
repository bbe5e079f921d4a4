"""SentenceTransmorgrifier post-correction: learns (ASR output -> true text) edits.

Training runs in a child process (corrector_job.py) so that a stop request is
honoured at once: the parent polls its stop flag while relaying the child's
summary lines to the log, and ends the child on SIGTERM. Applying a trained
corrector happens in-process; the library prints on stdout and writes temp
files in the working directory, so those calls run in a scratch folder with
stdout sent to stderr (stdout belongs to the JSON-lines protocol).

transmorgrifier.tm is the library's own file: a zip of params.json (format
version, context sizes, iteration cap, the constant inserted letter when there
is one) and catboost models in catboost's binary format (action.cb, char.cb).
None of it is a pickle, and `Transmorgrifier().load(path)` reads it. It comes
back from projects inside artifacts, so the engines read it with their own
loader instead of the library's: only those three members, within the archive
caps, parameters checked, each model handed to catboost as a .cbm file.
"""
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading

from .. import events, untrusted
from ..events import EngineError
from .config import Transmorgrifier as Options  # its settings: iterations, device, ...

FILENAME = "transmorgrifier.tm"
KILL_AFTER_S = 3.0  # grace between SIGTERM and SIGKILL for the child
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train(pairs: list[tuple[str, str]], val_pairs: list[tuple[str, str]], opts: Options, out_path: str,
          stop) -> dict | None:
    """Trains and saves a corrector at out_path: returns the child's summary, or None
    when it failed (warned). Raises events.Interrupted on a stop request."""
    with tempfile.TemporaryDirectory(prefix="transmorgrifier-") as tmp:
        job = {"train": pairs, "val": val_pairs, "out": os.path.abspath(out_path),
               "summary": os.path.join(tmp, "summary.json"), "iterations": opts.iterations,
               "early_stopping_rounds": opts.early_stopping_rounds, "device": opts.device,
               "context": opts.context, "learning_rate": opts.learning_rate, "threads": opts.threads,
               "catboost": opts.catboost or {}}
        job_path = os.path.join(tmp, "job.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f, ensure_ascii=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen([sys.executable, "-m", "gpuworker_engines.ctc.corrector_job", job_path],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
        events.log(f"post-correction: training in process {proc.pid}")
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_relay, args=(proc.stdout, lines), daemon=True)
        reader.start()
        while proc.poll() is None or not lines.empty() or reader.is_alive():
            if stop:
                _end(proc)
                raise events.Interrupted("stopped during post-correction training")
            try:
                events.log("post-correction: " + lines.get(timeout=0.2))
            except queue.Empty:
                pass
        if stop:
            raise events.Interrupted("stopped during post-correction training")
        if proc.returncode != 0 or not os.path.exists(job["summary"]):
            events.warning(f"post-correction not trained: its training step exited with code {proc.returncode}")
            return None
        with open(job["summary"], encoding="utf-8") as f:
            return json.load(f)


def _relay(stream, lines: queue.Queue) -> None:
    for line in stream:
        line = line.rstrip()
        if line:
            lines.put(line)
    stream.close()


def _end(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _sandbox():
    cwd = os.getcwd()
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryDirectory(prefix="transmorgrifier-") as tmp:
        os.dup2(2, 1)
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield tmp
        finally:
            sys.stdout.flush()
            os.chdir(cwd)
            os.dup2(saved, 1)
            os.close(saved)


TM_MEMBERS = {"params.json", "action.cb", "char.cb"}
TM_VERSION = 2  # the library's FILE_VERSION this loader knows
CBM_MAGIC = b"CBM1"  # catboost's binary model header
MAX_CONTEXT = 64


def load(directory: str):
    """The post-corrector stored with a model, or None when it has none."""
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        return None
    members = untrusted.read_zip_members(path, TM_MEMBERS)
    if "params.json" not in members or "action.cb" not in members:
        raise untrusted.refused(path, "a post-correction model needs params.json and action.cb")
    params = _params(untrusted.parse_json(members["params.json"], f"{path}: params.json"), path)
    if params["constant_output"] is None and "char.cb" not in members:
        raise untrusted.refused(path, "no char.cb and no constant_output in params.json")
    from sentence_transmorgrifier.transmorgrify import Transmorgrifier

    tm = Transmorgrifier()
    tm.name = path
    tm.leading_context, tm.trailing_context = params["leading_context"], params["trailing_context"]
    tm.iterations, tm.constant_output = params["iterations"], params["constant_output"]
    with tempfile.TemporaryDirectory(prefix="transmorgrifier-") as tmp:
        tm.action_model = _catboost(members["action.cb"], tmp, f"{path}: action.cb")
        tm.char_model = None if tm.constant_output is not None else \
            _catboost(members["char.cb"], tmp, f"{path}: char.cb")
    return tm


def _params(p, path: str) -> dict:
    if not isinstance(p, dict):
        raise untrusted.refused(path, "params.json is not a JSON object")
    out = {}
    for key, low, high in (("version", 1, TM_VERSION), ("leading_context", 0, MAX_CONTEXT),
                           ("trailing_context", 0, MAX_CONTEXT), ("iterations", 0, 10**9)):
        v = p.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise untrusted.refused(path, f"params.json: {key} must be an integer from {low} to {high}, "
                                    f"not {v!r}")
        out[key] = v
    c = p.get("constant_output")
    if c is not None and (not isinstance(c, str) or len(c) > 8):
        raise untrusted.refused(path, f"params.json: constant_output must be a short string, not {c!r}")
    out["constant_output"] = c
    return out


def _catboost(data: bytes, tmp: str, shown: str):
    if not data.startswith(CBM_MAGIC):
        raise untrusted.refused(shown, "not a catboost binary model")
    from catboost import CatBoostClassifier

    model_path = os.path.join(tmp, "model.cbm")
    with open(model_path, "wb") as f:
        f.write(data)
    try:
        return CatBoostClassifier().load_model(model_path, format="cbm")
    except Exception as e:  # noqa: BLE001 - catboost's own errors
        raise EngineError(f"{shown}: not a readable catboost model ({type(e).__name__}: {e})") from None
    finally:
        os.unlink(model_path)


def apply(tm, sentences: list[str]) -> list[str]:
    with _sandbox():
        return [" ".join(s.split()) if s else s for s in tm.execute(list(sentences))]
