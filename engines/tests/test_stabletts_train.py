"""StableTTS engine end to end on espeak-ng speech with the tiny model: learning,
outputs, exact resume, SIGTERM, clear errors, synthesis and held-out evaluation."""
import contextlib
import csv
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
from gpuworker_engines.stabletts.config import SynthesizeConfig
from gpuworker_engines.stabletts.model import StableTTS

torch.set_num_threads(1)
ENGINES = Path(__file__).resolve().parents[1]
PHRASES = ["let there be light", "and there was light", "god saw the light", "the first day"]
# a model smaller than "tiny" for the tests that check plumbing rather than learning
SMALL = {"hidden_channels": 16, "filter_channels": 32, "gin_channels": 16, "n_mels": 24,
         "n_enc_layers": 1}


def write_dataset(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "index.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return folder


def espeak_dataset(folder: Path, rate: int = 16000, texts=PHRASES) -> Path:
    """Short espeak-ng utterances as mono 16-bit WAVs at `rate`."""
    rows = []
    for i, text in enumerate(texts):
        raw = folder / f"raw{i}.wav"
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        wav, sr = sf.read(raw, dtype="float32")
        g = math.gcd(rate, sr)
        sf.write(folder / f"u{i}.wav", resample_poly(wav, rate // g, sr // g), rate, subtype="PCM_16")
        raw.unlink()
        rows.append({"id": f"u{i}", "cell_id": f"c{i}", "reference": f"GEN 1:{i + 1}",
                     "text": text, "audio": f"u{i}.wav"})
    return write_dataset(folder, rows)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return espeak_dataset(tmp_path_factory.mktemp("speech"))


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
    """The tiny model trained from scratch on three utterances (one held out), 150 steps."""
    out = tmp_path_factory.mktemp("trained")
    return run_in_process(train.run, train_config(speech, out, epochs=150, val_split=0.25,
                                                  batch_size=3))


def test_training_from_scratch_lowers_every_loss(trained):
    result, events = trained
    steps = step_losses(events)
    assert sorted(steps) == list(range(1, 151))

    def mean(key, rng):
        return np.mean([steps[s]["losses"][key] for s in rng])

    # the prior loss is a Gaussian NLL: it cannot fall below 0.5 * log(2 pi)
    floor = {"flow": 0.0, "duration": 0.0, "prior": 0.5 * math.log(2 * math.pi)}
    for key, margin in (("flow", 0.2), ("duration", 0.6), ("prior", 0.2)):
        first, last = mean(key, range(1, 4)), mean(key, range(141, 151))
        assert last - floor[key] < margin * (first - floor[key]), (key, first, last)
    assert (result["base"], result["frontend"], result["n_symbols"]) == ("scratch", "ipa", 401)
    kinds = {e["kind"] for e in events if e["event"] == "checkpoint"}
    assert kinds == {"best", "final", "resumable"}


def test_training_writes_models_sidecars_split_and_metrics(trained):
    result, _ = trained
    for key in ("best_model", "final_model", "best_model_meta", "final_model_meta", "metrics_csv",
                "loss_png", "training_metrics_csv", "split_file"):
        assert os.path.exists(result[key]), key
    assert result["best_model_meta"] == result["best_model"].removesuffix(".pt") + ".json"
    with open(result["split_file"]) as f:
        split = json.load(f)
    assert len(split["train"]) == 3 and len(split["val"]) == 1
    assert set(split["train"] + split["val"]) == {"u0", "u1", "u2", "u3"}
    with open(result["training_metrics_csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["epoch", "train_total_loss", "val_total_loss"]
    assert {"train_duration_loss", "train_prior_loss", "train_flow_loss",
            "val_flow_loss"} <= set(rows[0])
    assert len(rows) == 151 and rows[-1][0] == "150"
    last = dict(zip(rows[0], rows[-1]))
    subs = sum(float(last[f"train_{k}_loss"]) for k in ("duration", "prior", "flow"))
    assert float(last["train_total_loss"]) == pytest.approx(subs)
    assert float(last["val_total_loss"]) > 0


def test_saved_model_is_a_bare_state_dict_that_loads_strictly(trained):
    result, _ = trained
    sd = torch.load(result["final_model"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    meta = ckpt.read_meta(result["final_model"])
    assert meta.size == "tiny" and not meta.published and meta.info["kind"] == "final"
    fresh = StableTTS(meta.config, len(meta.frontend))
    fresh.load_state_dict(sd, strict=True)
    assert list(fresh.state_dict()) == list(sd)


def test_published_tools_continue_from_the_output_folder(trained):
    """KdaiP's continue_training (the recorded rule) refuses the output folder itself and
    loads kdaip/checkpoint_<best epoch>.pt, the best model under a second name."""
    from test_stabletts_recipe import published_continue_rule
    result, _ = trained
    out = os.path.dirname(result["best_model"])
    assert published_continue_rule(os.listdir(out)) == {"raises": "ValueError"}
    folder = os.path.join(out, "kdaip")
    name = f"checkpoint_{result['best_epoch']}.pt"
    assert published_continue_rule(os.listdir(folder)) == {"returns": 0, "loads": [name]}
    assert result["kdaip_checkpoint"] == os.path.join(folder, name)
    assert os.path.samefile(result["kdaip_checkpoint"], result["best_model"])  # one file, one upload
    meta = json.loads(open(result["best_model_meta"], encoding="utf-8").read())
    fresh = StableTTS(ckpt.read_meta(result["best_model"]).config, meta["kdaip_constructor"]["n_vocab"])
    fresh.load_state_dict(torch.load(result["kdaip_checkpoint"], weights_only=True), strict=True)


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
    wa = torch.load(straight["final_model"], weights_only=True)
    wb = torch.load(second["final_model"], weights_only=True)
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
    state, _, meta = ckpt.read_resumable(saved[0]["path"])
    assert state["step"] == saved[0]["step"] >= 1
    assert 0 < state["batch_in_epoch"] < 9  # stopped mid-epoch
    assert {"model", "optimizer", "rng", "meta", "train_config"} <= set(state)

    cfg["epochs"] = state["epoch"] + 1
    code, events = run_cli("train", cfg, tmp_path, resume=saved[0]["path"])
    assert code == 0, events
    steps = sorted(step_losses(events))
    assert steps[0] == state["step"] + 1
    result = events[-1]
    assert result["event"] == "result" and result["epochs_completed"] == state["epoch"] + 1
    assert result["steps"] == 9 * (state["epoch"] + 1)


def test_default_size_without_a_base_names_the_settings(speech, tmp_path):
    cfg = train_config(speech, tmp_path / "out", size="default")
    with pytest.raises(EngineError) as e:
        run_in_process(train.run, cfg)
    for name in ("--tts-base-model", "GPU_WORKER_TTS_BASE_MODEL", "model.base_checkpoint",
                 "model.from_scratch"):
        assert name in str(e.value)


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


def test_synthesize_writes_one_wav_per_item_and_counts_unmapped(speech, trained, tmp_path):
    data = write_dataset(tmp_path / "texts", [
        {"id": "GEN 1:1", "text": "let there be light; now"},
        {"id": "GEN 1:2", "text": "the first day: \"one\""}])
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
    result = events[-1]
    assert result["unmapped_characters"] == {'"': 2, ":": 1, ";": 1}
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "4 character" in warnings[0]
    assert result["count"] == 2 and result["rtf"] > 0 and "Griffin-Lim" in result["vocoder"]
    assert result["audio_seconds"] == pytest.approx(sum(e["duration"] for e in items), abs=0.01)


def test_evaluate_scores_only_the_held_out_item(speech, trained, tmp_path):
    result, _ = trained
    cfg = {"checkpoint": result["best_model"], "dataset": str(speech),
           "output_dir": str(tmp_path / "eval"), "steps": 4, "device": "cpu", "max_items": 8}
    res, events = run_in_process(evaluate.run, cfg)  # finds split.json beside the model
    with open(result["split_file"]) as f:
        val = json.load(f)["val"]
    scored = [e for e in events if e["event"] == "item"]
    assert res["items_scored"] == 1 and res["split"] == "val" and math.isfinite(res["mcd"])
    assert [e["id"] for e in scored] == val
    assert scored[0]["text"] == PHRASES[int(val[0][1])] and os.path.exists(scored[0]["path"])

    res, _ = run_in_process(evaluate.run, dict(cfg, split_file=result["split_file"],
                                               split="train", max_items=2, write_audio=False))
    assert res["items_scored"] == 2 and res["split"] == "train"

    empty = tmp_path / "split.json"
    empty.write_text(json.dumps({"train": ["u0", "u1", "u2", "u3"], "val": []}))
    res, events = run_in_process(evaluate.run, dict(cfg, split_file=str(empty)))
    assert res["items_scored"] == 0 and "mcd" not in res
    assert not [e for e in events if e["event"] == "item"]


def test_evaluate_gives_lower_mcd_after_training(speech, trained, tmp_path):
    # without guidance: three clips teach the unconditional velocity too little for cfg 3
    best = trained[0]["best_model"]
    model, meta = ckpt.load_model(best)
    untrained = str(tmp_path / "untrained.pt")
    torch.manual_seed(0)
    ckpt.save_model(StableTTS(model.cfg, len(meta.frontend)), meta, untrained)
    scores = {}
    for name, path in (("trained", best), ("untrained", untrained)):
        cfg = {"checkpoint": path, "dataset": str(speech), "output_dir": str(tmp_path / name),
               "steps": 6, "device": "cpu", "split_file": trained[0]["split_file"],
               "split": "train", "write_audio": False, "cfg_scale": 1.0}
        result, events = run_in_process(evaluate.run, cfg)
        assert result["items_scored"] == 3 and math.isfinite(result["mcd"])
        scores[name] = result["mcd"]
    assert scores["trained"] < scores["untrained"], scores


def test_synthesize_refuses_a_bad_solver():
    with pytest.raises(EngineError, match="solver must be one of euler, midpoint, dopri5"):
        SynthesizeConfig.from_dict({"checkpoint": "x", "dataset": "d", "output_dir": "o",
                                    "voice_reference": "v", "solver": "rk4"})
