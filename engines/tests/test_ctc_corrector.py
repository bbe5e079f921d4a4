"""Post-correction: it learns systematic errors, its log stays short, and a stop request
ends its training step within seconds, whoever receives the signal."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from asr_common import ENGINES, engine_env
from gpuworker_engines import events
from gpuworker_engines.ctc import corrector, scoring

WORDS = ("the shepherd and his sheep walk through the green field near the river "
         "while the farmer sows seed").split()


def _asr_like(s):  # a recogniser that keeps hearing "ee" as "i" and "th" as "d"
    return s.replace("ee", "i").replace("th", "d")


def _sentences(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(n)]


def test_corrector_fixes_systematic_errors_with_a_short_log(tmp_path, capfd, monkeypatch):
    train_s, val_s, held_out = _sentences(40, 0), _sentences(8, 1), _sentences(6, 2)
    assert not set(held_out) & set(train_s)
    opts = corrector.Options(iterations=400, early_stopping_rounds=20, device="cpu")
    summary = corrector.train([(_asr_like(s), s) for s in train_s], [(_asr_like(s), s) for s in val_s],
                              opts, str(tmp_path / corrector.FILENAME), events.StopFlag())
    captured = capfd.readouterr()
    log = captured.err.splitlines()
    assert captured.out == ""  # stdout belongs to the JSON-lines protocol
    assert summary["device"] == "CPU" and 0 < summary["action"]["trees"] <= 400
    assert 5 <= len(log) < 100, len(log)
    assert any("edit model:" in line and "trees kept" in line for line in log)
    tm = corrector.load(str(tmp_path))
    before = scoring.cer([_asr_like(s) for s in held_out], held_out)
    after = scoring.cer(corrector.apply(tm, [_asr_like(s) for s in held_out]), held_out)
    assert before > 0.1 and after < before / 2, (before, after)
    assert capfd.readouterr().out == ""  # the library's chatter never reaches the protocol stream
    assert corrector.load(str(tmp_path / "nothing-here")) is None
    # our loader reads the library's own file: the library loads it too, and both correct alike
    from sentence_transmorgrifier.transmorgrify import Transmorgrifier
    (tmp_path / "lib").mkdir()
    monkeypatch.chdir(tmp_path / "lib")  # the library writes its temp files in the working folder
    theirs = Transmorgrifier().load(str(tmp_path / corrector.FILENAME))
    noisy = [_asr_like(s) for s in held_out]
    assert list(theirs.execute(noisy)) == list(tm.execute(noisy))


DRIVER = r"""
import random, sys
from gpuworker_engines import events
from gpuworker_engines.ctc import corrector
rng = random.Random(0)
words = "in the beginning was the word and the word was with god".split()
pairs = [(s.replace("e", "i"), s) for s in (" ".join(rng.choice(words) for _ in range(12)) for _ in range(150))]
stop = events.install_stop_handler()
try:
    corrector.train(pairs, pairs[:10], corrector.Options(iterations=1000000, early_stopping_rounds=1000000,
                    device="cpu", threads=1), sys.argv[1], stop)
except events.Interrupted:
    sys.exit(events.EXIT_INTERRUPTED)
sys.exit(3)
"""


@pytest.mark.parametrize("to_group", [False, True], ids=["signal-to-engine", "signal-to-group"])
def test_sigterm_ends_post_correction_within_ten_seconds(tmp_path, to_group):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "m.tm")], cwd=ENGINES,
                            env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    child = None
    for line in proc.stderr:  # wait until catboost is inside its training loop
        if "training in process" in line:
            child = int(line.rsplit(" ", 1)[1])
        if "0:\tlearn" in line:
            break
    assert child is not None
    sent = time.monotonic()
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)  # what the worker does
    else:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=10)  # the bound this step promises, far above what it takes
    print(f"stopped {time.monotonic() - sent:.2f}s after SIGTERM", file=sys.stderr)
    assert code == events.EXIT_INTERRUPTED
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the catboost process is gone too


def test_gpu_request_uses_the_gpu_or_falls_back_to_the_cpu(tmp_path, capsys):
    from gpuworker_engines.ctc.corrector_job import gpu_available

    pairs = [(_asr_like(s), s) for s in _sentences(12, 3)]
    summary = corrector.train(pairs, pairs[:3], corrector.Options(iterations=20, device="gpu"),
                              str(tmp_path / corrector.FILENAME), events.StopFlag())
    log = capsys.readouterr().err
    if gpu_available():
        assert summary["device"] == "GPU"
    else:
        assert summary is not None and summary["device"] == "CPU" and "training on the CPU" in log
    assert corrector.load(str(tmp_path)) is not None
