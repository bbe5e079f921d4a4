"""StableTTS engine end to end on espeak-ng speech: learning, exact resume,
SIGTERM, fine-tuning, corrupt data, synthesis and evaluation."""
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from gpuworker_engines.events import EngineError, StopFlag
from gpuworker_engines.stabletts import ckpt, evaluate, train
from gpuworker_engines.stabletts.model import StableTTS

torch.set_num_threads(1)
ENGINES = Path(__file__).resolve().parents[1]
PHRASES = ["let there be light", "and there was light", "god saw the light", "the first day"]
# a model smaller than "tiny" for the tests that check plumbing rather than learning
SMALL = {"hidden": 16, "filter": 32, "style_dim": 8, "dp_filter": 16, "decoder_hidden": 16,
         "decoder_filter": 32, "n_mels": 24}


def write_dataset(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "index.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return folder


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Four short espeak-ng utterances as 16 kHz mono 16-bit WAVs."""
    folder = tmp_path_factory.mktemp("speech")
    rows = []
    for i, text in enumerate(PHRASES):
        raw = folder / f"raw{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        wav, sr = sf.read(raw, dtype="float32")
        wav = resample_poly(wav, 16000, sr) if sr != 16000 else wav
        sf.write(folder / f"u{i}.wav", wav, 16000, subtype="PCM_16")
        raw.unlink()
        rows.append({"id": f"u{i}", "cell_id": f"c{i}", "reference": f"GEN 1:{i + 1}", "text": text,
                     "audio": f"u{i}.wav", "duration": len(wav) / 16000})
    return write_dataset(folder, rows)


def run_in_process(command, config: dict) -> tuple[dict, list[dict]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = command(config, StopFlag())
    return result, [json.loads(line) for line in out.getvalue().splitlines()]


def run_cli(command: str, config: dict, tmp: Path, resume: str | None = None, wait=True):
    path = tmp / f"{command}-{len(list(tmp.glob('*.json')))}.json"
    path.write_text(json.dumps(config))
    args = [sys.executable, "-m", "gpuworker_engines", "stabletts", command, "--config", str(path)]
    if resume:
        args += ["--resume", resume]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ENGINES))
    proc = subprocess.Popen(args, cwd=ENGINES, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    if not wait:
        return proc
    stdout, _ = proc.communicate(timeout=300)
    return proc.returncode, [json.loads(line) for line in stdout.splitlines()]


def train_config(dataset: Path, out: Path, **kw) -> dict:
    cfg = {"dataset": str(dataset), "output_dir": str(out), "size": "tiny", "device": "cpu",
           "batch_size": 4, "val_split": 0, "learning_rate": 3e-3, "warmup_steps": 5,
           "progress_every_steps": 1, "seed": 7}
    cfg.update(kw)
    return cfg


def step_losses(events: list[dict]) -> dict[int, dict]:
    return {e["step"]: e for e in events if e["event"] == "progress" and "val" not in e}


@pytest.fixture(scope="module")
def trained(speech, tmp_path_factory):
    """The tiny model overfitted on the four utterances for 150 steps."""
    out = tmp_path_factory.mktemp("trained")
    result, events = run_in_process(train.run, train_config(speech, out, epochs=150))
    return result, events


def test_overfitting_lowers_flow_and_duration_losses(trained):
    result, events = trained
    steps = step_losses(events)
    assert sorted(steps) == list(range(1, 151))

    def mean(key, rng):
        return np.mean([steps[s]["losses"][key] for s in rng])

    # the prior loss is a Gaussian NLL: it cannot fall below 0.5 * log(2 pi)
    floor = {"flow": 0.0, "dur": 0.0, "prior": 0.5 * math.log(2 * math.pi)}
    for key, margin in (("flow", 0.4), ("dur", 0.6), ("prior", 0.5)):
        first, last = mean(key, range(1, 4)), mean(key, range(141, 151))
        assert last - floor[key] < margin * (first - floor[key]), (key, first, last)
    for key in ("best_model", "final_model", "metrics_csv", "loss_png"):
        assert os.path.exists(result[key]), key
    assert result["epochs_completed"] == 150 and result["symbols"][0] == " "
    kinds = {e["kind"] for e in events if e["event"] == "checkpoint"}
    assert kinds == {"best", "final", "resumable"}
    with open(result["metrics_csv"]) as f:
        assert len(f.read().splitlines()) == 151  # header + one row per epoch


def test_twenty_plus_twenty_resumed_steps_equal_forty_straight(speech, tmp_path):
    base = dict(model=SMALL, batch_size=1, val_split=0.25, epochs=14, learning_rate=2e-3)
    straight, ev_straight = run_in_process(
        train.run, train_config(speech, tmp_path / "straight", stop_at_step=40, **base))
    first, _ = run_in_process(
        train.run, train_config(speech, tmp_path / "split", stop_at_step=20, **base))
    assert first["steps"] == 20
    second, ev_second = run_in_process(
        train.run, train_config(speech, tmp_path / "split", stop_at_step=40,
                                resume=first["resumable"], **base))
    assert straight["steps"] == second["steps"] == 40
    a, b = step_losses(ev_straight), step_losses(ev_second)
    assert min(b) == 21 and max(b) == 40
    for s in range(21, 41):
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5, abs=1e-6), s
        assert b[s]["lr"] == a[s]["lr"]
    wa = ckpt.read(straight["final_model"])["model"]
    wb = ckpt.read(second["final_model"])["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_sigterm_mid_epoch_leaves_a_checkpoint_that_resumes(speech, tmp_path):
    # each recording three times: nine training steps per epoch, so a stop lands mid-epoch
    data = write_dataset(tmp_path / "data", [
        {"id": f"u{i}-{k}", "text": text, "audio": str(speech / f"u{i}.wav")}
        for k in range(3) for i, text in enumerate(PHRASES)])
    cfg = train_config(data, tmp_path / "out", model=SMALL, batch_size=1, val_split=0.25,
                       epochs=200)
    proc = run_cli("train", cfg, tmp_path, wait=False)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    seen += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 75
    saved = [e for e in seen if e["event"] == "checkpoint" and e["kind"] == "resumable"]
    assert len(saved) == 1 and os.path.exists(saved[0]["path"])
    state = ckpt.read(saved[0]["path"])
    assert state["step"] == saved[0]["step"] >= 1
    assert 0 < state["batch_in_epoch"] < 9  # stopped mid-epoch
    assert {"model", "optimizer", "rng", "model_config", "symbols"} <= set(state)

    cfg["epochs"] = state["epoch"] + 1
    code, events = run_cli("train", cfg, tmp_path, resume=saved[0]["path"])
    assert code == 0, events
    steps = sorted(step_losses(events))
    assert steps[0] == state["step"] + 1
    result = events[-1]
    assert result["event"] == "result" and result["epochs_completed"] == state["epoch"] + 1
    assert result["steps"] == 9 * (state["epoch"] + 1)


def test_fine_tuning_extends_symbols_and_keeps_old_rows(speech, trained, tmp_path):
    base_path = trained[0]["best_model"]
    base = ckpt.read(base_path)
    data = write_dataset(tmp_path / "new", [
        {"id": "n0", "text": "ŋa ŋa light", "audio": str(speech / "u0.wav")},
        {"id": "n1", "text": "Light", "audio": str(speech / "u1.wav")}])
    result, _ = run_in_process(train.run, train_config(
        data, tmp_path / "out", base_checkpoint=base_path, epochs=1, learning_rate=1e-12,
        weight_decay=0))
    tuned = ckpt.read(result["final_model"])
    old, new = base["symbols"]["symbols"], tuned["symbols"]["symbols"]
    assert new[:len(old)] == old and set(new[len(old):]) == {"ŋ", "L"}
    w_old, w_new = base["model"]["encoder.embed.weight"], tuned["model"]["encoder.embed.weight"]
    assert w_new.shape[0] == len(new)
    torch.testing.assert_close(w_new[:len(old)], w_old, rtol=0, atol=1e-6)
    assert tuned["model"]["mel_mean"].item() == base["model"]["mel_mean"].item()


def test_corrupt_dataset_line_gives_a_clear_error(speech, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = json.dumps({"id": "u0", "text": "hello", "audio": str(speech / "u0.wav")})
    (folder / "index.jsonl").write_text(good + "\n{\"id\": \"u1\", \"text\": \n")
    code, events = run_cli("train", train_config(folder, tmp_path / "out"), tmp_path)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert "index.jsonl:2" in events[-1]["message"] and "not valid JSON" in events[-1]["message"]


def test_unreadable_audio_names_the_item(speech, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEnot really audio")
    data = write_dataset(tmp_path / "d", [
        {"id": "ok", "text": "light", "audio": str(speech / "u0.wav")},
        {"id": "broken", "text": "light", "audio": str(tmp_path / "broken.wav")}])
    with pytest.raises(EngineError, match="item broken: cannot read audio"):
        run_in_process(train.run, train_config(data, tmp_path / "out"))


def test_synthesize_writes_one_wav_per_item(speech, trained, tmp_path):
    data = write_dataset(tmp_path / "texts", [
        {"id": "GEN 1:1", "text": "let there be light ž"},
        {"id": "GEN 1:2", "text": "žthe first day"}])
    cfg = {"checkpoint": trained[0]["best_model"], "dataset": str(data),
           "voice_reference": str(speech / "u2.wav"), "output_dir": str(tmp_path / "wav"),
           "steps": 4, "solver": "midpoint", "batch_size": 2, "device": "cpu"}
    code, events = run_cli("synthesize", cfg, tmp_path)
    assert code == 0, events
    items = [e for e in events if e["event"] == "item"]
    assert sorted(e["id"] for e in items) == ["GEN 1:1", "GEN 1:2"]
    for e in items:
        assert e["path"] == str(tmp_path / "wav" / f"{e['id']}.wav")
        info = sf.info(e["path"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration == pytest.approx(e["duration"], abs=1e-3) and e["duration"] > 0.1
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0].count("ž") == 1
    result = events[-1]
    assert result["count"] == 2 and result["rtf"] > 0 and "Griffin-Lim" in result["vocoder"]
    assert result["audio_seconds"] == pytest.approx(sum(e["duration"] for e in items), abs=0.01)


def test_evaluate_gives_finite_mcd_lower_after_training(speech, trained, tmp_path):
    best = trained[0]["best_model"]
    model, table, state = ckpt.load_model(best)
    fresh = StableTTS(model.cfg, len(table))
    fresh.set_mel_stats(model.mel_mean.item(), model.mel_std.item())
    untrained = tmp_path / "untrained.pt"
    torch.save(ckpt.inference_state(fresh, table, "final"), untrained)
    scores = {}
    for name, path in (("trained", best), ("untrained", str(untrained))):
        cfg = {"checkpoint": path, "dataset": str(speech), "output_dir": str(tmp_path / name),
               "steps": 6, "device": "cpu", "write_audio": name == "trained"}
        result, events = run_in_process(evaluate.run, cfg)
        assert result["count"] == 4 and math.isfinite(result["mcd"])
        assert len([e for e in events if e["event"] == "item"]) == 4
        scores[name] = result["mcd"]
    assert len(list((tmp_path / "trained").glob("*.wav"))) == 4
    assert scores["trained"] < scores["untrained"], scores
