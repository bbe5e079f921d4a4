"""Shared by the ASR engine tests: espeak-ng speech, dataset folders, event capture."""
import json
import math
import os
import random
import subprocess
import sys

import soundfile as sf
from scipy.signal import resample_poly

ENGINES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ENGINES)
SAMPLE_RATE = 16000

ADJ, NOUN, VERB = ["red", "big", "old", "blue"], ["cat", "dog", "fish", "bird"], ["runs", "sits", "eats", "sleeps"]
PHRASES = [f"{a} {n} {v}" for a in ADJ for n in NOUN for v in VERB]
random.Random(0).shuffle(PHRASES)
PHRASES = PHRASES[:40]


def speak(text: str, path: str) -> None:
    raw = path + ".espeak.wav"
    subprocess.run(["espeak-ng", "-w", raw, text], check=True, capture_output=True)
    wav, sr = sf.read(raw, dtype="float32")
    g = math.gcd(sr, SAMPLE_RATE)
    sf.write(path, resample_poly(wav, SAMPLE_RATE // g, sr // g), SAMPLE_RATE, subtype="PCM_16")
    os.unlink(raw)


def write_dataset(directory: str, rows: list[dict]) -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "index.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return directory


def speech_dataset(directory: str, phrases=PHRASES) -> str:
    os.makedirs(os.path.join(directory, "audio"), exist_ok=True)
    rows = []
    for i, p in enumerate(phrases):
        speak(p, os.path.join(directory, "audio", f"{i}.wav"))
        rows.append({"id": f"u{i}", "cell_id": f"c{i}", "text": p.capitalize() + ".",
                     "audio": f"audio/{i}.wav", "duration": 0})
    return write_dataset(directory, rows)


def subset(src: str, dst: str, n: int, text=True) -> str:
    rows = [json.loads(line) for line in open(os.path.join(src, "index.jsonl"))][:n]
    for r in rows:
        r["audio"] = os.path.join(src, r["audio"])  # absolute paths survive os.path.join
        if not text:
            r["text"] = ""
    return write_dataset(dst, rows)


def tiny_config(dataset: str, out: str, **kw) -> dict:
    """A size-tiny run that learns in seconds; post-correction and LM off unless asked."""
    c = {"dataset": dataset, "output_dir": out, "size": "tiny", "device": "cpu", "seed": 7, "epochs": 2,
         "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 10, "val_split": 0, "test_split": 0,
         "save_every_steps": 1000, "progress_every_steps": 1, "transmorgrifier": {"enabled": False},
         "lm": {"enabled": False}}
    c.update(kw)
    return c


class StopAfter:
    """A stop flag that turns true after it has been polled n times (a step is one poll)."""

    def __init__(self, n):
        self.n = n

    def __bool__(self):
        self.n -= 1
        return self.n < 0


def emitted(capsys, kind=None) -> list[dict]:
    evs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return [e for e in evs if kind is None or e["event"] == kind]


def engine_env() -> dict:
    return {**os.environ, "PYTHONPATH": ENGINES, "OMP_NUM_THREADS": "1"}
