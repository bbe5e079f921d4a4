"""StableTTS training under torchrun: two CPU processes (gloo) share each optimizer step's
micro-batches, take the recipe of one process, and only rank 0 speaks the protocol and
writes files."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from gpuworker_engines.stabletts import ckpt

ENGINES = Path(__file__).resolve().parents[1]
PHRASES = ["let there be light", "and there was light", "god saw the light", "the first day"]
SMALL = {"hidden_channels": 16, "filter_channels": 32, "gin_channels": 16, "n_mels": 24,
         "n_enc_layers": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speech")
    rows = []
    for i, text in enumerate(PHRASES):
        raw = folder / f"raw{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        wav, sr = sf.read(raw, dtype="float32")
        sf.write(folder / f"u{i}.wav", resample_poly(wav, 16000, sr), 16000, subtype="PCM_16")
        rows.append(json.dumps({"id": f"u{i}", "text": text, "audio": f"u{i}.wav"}))
    (folder / "index.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def train(processes: int, config: dict, tmp: Path) -> tuple[dict, list[dict]]:
    """(result, events) of a training run in `processes` CPU processes (1: no torchrun)."""
    path = tmp / f"config-{processes}.json"
    path.write_text(json.dumps(config))
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ENGINES))
    proc = subprocess.run([sys.executable, *launcher, "-m", "gpuworker_engines", "stabletts", "train",
                           "--config", str(path)], cwd=ENGINES, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 1  # rank 1 stays silent on stdout
    return results[0], events


def step_events(events: list[dict]) -> dict[int, dict]:
    return {e["step"]: e for e in events if e["event"] == "progress" and "val" not in e}


def tiny_config(speech: Path, out: Path, **kw) -> dict:
    return {"dataset": str(speech), "output_dir": str(out), "size": "tiny", "device": "cpu",
            "batch_size": 1, "progress_every_steps": 1, "model": SMALL, **kw}


def test_two_processes_take_the_recipe_of_one(speech, tmp_path):
    # four items, batch 1, two micro-batches a step: two optimizer steps an epoch, on 1 or 2 processes
    cfg = tiny_config(speech, tmp_path / "one", epochs=3, gradient_accumulation_steps=2, val_split=0,
                      learning_rate=2e-3, warmup_steps=2)
    one, ev_one = train(1, cfg, tmp_path)
    two, ev_two = train(2, {**cfg, "output_dir": str(tmp_path / "two")}, tmp_path)
    assert one["hyperparameters"] == {**two["hyperparameters"], "accumulation_per_process": 2, "processes": 1}
    hp2 = two["hyperparameters"]
    assert (hp2["gradient_accumulation_steps"], hp2["accumulation_per_process"], hp2["processes"]) == (2, 1, 2)
    for hp in (one["hyperparameters"], two["hyperparameters"]):
        assert (hp["effective_batch"], hp["steps_per_epoch"], hp["total_steps"], hp["learning_rate"],
                hp["warmup_steps"]) == (2, 2, 6, 2e-3, 2)
    a, b = step_events(ev_one), step_events(ev_two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert [a[s]["lr"] for s in a] == [b[s]["lr"] for s in a]  # the same learning rate at every step
    # each micro-batch draws the same noise wherever it runs: the same losses, the same model
    for s in a:
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5), s
    wa = torch.load(one["final_model"], weights_only=True)
    wb = torch.load(two["final_model"], weights_only=True)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_two_processes_round_the_accumulation_up(speech, tmp_path):
    # three training items (one held out), batch 1, no accumulation asked: each of the two
    # processes takes a micro-batch, so a step holds two (reported), and the odd last one is
    # joined by a process that only takes part in the gradient reduction
    result, events = train(2, tiny_config(speech, tmp_path / "out", epochs=2, val_split=0.25), tmp_path)
    hp = result["hyperparameters"]
    assert (hp["effective_batch"], hp["gradient_accumulation_steps"], hp["accumulation_per_process"], hp["processes"],
            hp["steps_per_epoch"]) == (2, 1, 1, 2, 2)
    assert result["steps"] == 4 and result["epochs_completed"] == 2
    assert sorted(step_events(events)) == [1, 2, 3, 4]
    model, meta = ckpt.load_model(result["final_model"])
    assert meta.info["step"] == 4 and len(meta.frontend) == result["n_symbols"] == 401
    assert all(torch.isfinite(p).all() for p in model.parameters())
