"""SentenceTransmorgrifier post-correction: learns (ASR output -> true text) edits.

The library prints progress on stdout and writes temp files (and catboost_info/)
in the working directory, so every call runs inside a scratch folder with
stdout sent to stderr: stdout belongs to the JSON-lines protocol.
"""
import contextlib
import os
import sys
import tempfile

FILENAME = "transmorgrifier.tm"


@contextlib.contextmanager
def _sandbox():
    cwd = os.getcwd()
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryDirectory(prefix="transmorgrifier-") as tmp:
        os.dup2(2, 1)
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # Python-level prints (and catboost's log)
                yield tmp
        finally:
            sys.stdout.flush()
            os.chdir(cwd)
            os.dup2(saved, 1)
            os.close(saved)


def train(from_sentences: list[str], to_sentences: list[str], iterations: int = 4000,
          device: str = "cpu", context: int = 7):
    from sentence_transmorgrifier.transmorgrify import Transmorgrifier

    with _sandbox():
        tm = Transmorgrifier()
        tm.train(list(from_sentences), list(to_sentences), iterations=iterations, device=device,
                 trailing_context=context, leading_context=context, verbose=False)
    return tm


def save(tm, directory: str) -> str:
    path = os.path.abspath(os.path.join(directory, FILENAME))
    with _sandbox():
        tm.save(path)
    return path


def load(directory: str):
    """The post-corrector stored with a model, or None when it has none."""
    path = os.path.abspath(os.path.join(directory, FILENAME))
    if not os.path.exists(path):
        return None
    from sentence_transmorgrifier.transmorgrify import Transmorgrifier

    with _sandbox():
        return Transmorgrifier().load(path)


def apply(tm, sentences: list[str]) -> list[str]:
    with _sandbox():
        return [" ".join(s.split()) if s else s for s in tm.execute(list(sentences))]
