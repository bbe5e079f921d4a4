"""StableTTS training under torchrun: two CPU processes (gloo), batches sharded,
only rank 0 speaks the protocol and writes files."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_two_process_ddp_training_shards_batches(tmp_path):
    rows = []
    for i, text in enumerate(PHRASES):
        raw = tmp_path / f"raw{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        wav, sr = sf.read(raw, dtype="float32")
        sf.write(tmp_path / f"u{i}.wav", resample_poly(wav, 16000, sr), 16000, subtype="PCM_16")
        rows.append(json.dumps({"id": f"u{i}", "text": text, "audio": f"u{i}.wav"}))
    (tmp_path / "index.jsonl").write_text("\n".join(rows) + "\n")
    config = {"dataset": str(tmp_path), "output_dir": str(tmp_path / "out"), "size": "tiny",
              "device": "cpu", "epochs": 2, "batch_size": 1, "val_split": 0.25,
              "progress_every_steps": 1, "model": SMALL}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ENGINES))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "gpuworker_engines", "stabletts", "train", "--config", str(tmp_path / "config.json")],
        cwd=ENGINES, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 1  # rank 1 stays silent on stdout
    # three training items, batch 1, two ranks: one step per epoch each
    assert results[0]["steps"] == 2 and results[0]["epochs_completed"] == 2
    steps = [e["step"] for e in events if e["event"] == "progress" and "val" not in e]
    assert steps == [1, 2]
    model, meta = ckpt.load_model(results[0]["final_model"])
    assert meta.info["step"] == 2 and len(meta.frontend) == results[0]["n_symbols"] == 401
    assert all(torch.isfinite(p).all() for p in model.parameters())
