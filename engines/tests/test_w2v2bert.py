"""ASR engine tests: tiny random models on CPU, real speech from espeak-ng."""
import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

ENGINES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ENGINES)

from gpuworker_engines import dataset, events  # noqa: E402
from gpuworker_engines.events import EngineError  # noqa: E402
from gpuworker_engines.w2v2bert import (SAMPLE_RATE, artifact, data, scoring, transcribe,  # noqa: E402
                                        transmorgrifier, vocab)
from gpuworker_engines.w2v2bert.config import TrainConfig  # noqa: E402
from gpuworker_engines.w2v2bert.model import (base_vocab, load_audio, load_base, load_trained,  # noqa: E402
                                              resolve_base, tokenizer_from_vocab)
from gpuworker_engines.w2v2bert.train import lr_at, train  # noqa: E402

torch.set_num_threads(1)  # the shared box: more threads oversubscribe it

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
            f.write(json.dumps(r) + "\n")
    return directory


def subset(src: str, dst: str, n: int, text=True) -> str:
    rows = [json.loads(line) for line in open(os.path.join(src, "index.jsonl"))][:n]
    for r in rows:
        r["audio"] = os.path.join(src, r["audio"])  # absolute paths survive os.path.join
        if not text:
            r["text"] = ""
    return write_dataset(dst, rows)


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("speech")
    os.makedirs(d / "audio")
    rows = []
    for i, p in enumerate(PHRASES):
        speak(p, str(d / "audio" / f"{i}.wav"))
        rows.append({"id": f"u{i}", "cell_id": f"c{i}", "text": p.capitalize() + ".",
                     "audio": f"audio/{i}.wav", "duration": 0})
    return write_dataset(str(d), rows)


def config(dataset: str, out: str, **kw) -> dict:
    c = {"dataset": dataset, "output_dir": out, "size": "tiny", "device": "cpu", "seed": 7, "epochs": 2,
         "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 10, "val_split": 0,
         "save_interval": 1000, "progress_every_steps": 1, "transmorgrifier": {"enabled": False}}
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


# --- units ---------------------------------------------------------------------------------

def test_normalize_and_vocab():
    assert vocab.normalize("Hello, World!  12 don't") == "hello world 12 don't"
    assert vocab.normalize("A-b 3x", remove_numbers=True) == "a b x"
    assert vocab.normalize("Keep Case.", lowercase=False) == "Keep Case"
    v, dropped = vocab.build(["aab a", "bbq"], min_char_count=2)
    assert list(v)[:3] == ["[PAD]", "[UNK]", "|"] and v["[PAD]"] == 0
    assert "q" not in v and dropped == ["q"] and {"a", "b"} <= set(v)


def test_scoring():
    assert scoring.cer(["abc"], ["abc"]) == 0
    assert scoring.cer(["abd", ""], ["abc", "xy"]) == pytest.approx(3 / 5)
    assert scoring.wer(["a b c"], ["a x c d"]) == pytest.approx(2 / 4)


def test_lr_schedule_and_batches():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == 0
    rng = random.Random(1)
    durs = [rng.uniform(1, 10) for _ in range(100)]
    a = data.epoch_batches(durs, 8, 3, 0, True)
    assert a == data.epoch_batches(durs, 8, 3, 0, True)  # replayable on resume
    assert a != data.epoch_batches(durs, 8, 3, 1, True)
    assert sorted(i for b in a for i in b) == list(range(100))
    spread = np.mean([np.ptp([durs[i] for i in b]) for b in a if len(b) == 8])
    rand = np.mean([np.ptp([durs[i] for i in b]) for b in data.epoch_batches(durs, 8, 3, 0, False)])
    assert spread < rand / 2  # grouping by length cuts padding


def test_config_defaults_and_validation():
    c = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "transmorgrifier": {"iterations": 5}})
    assert (c.batch_size, c.learning_rate, c.val_split, c.save_interval) == (4, 1e-4, 0.1, 500)
    assert c.transmorgrifier == {"enabled": True, "iterations": 5, "device": "cpu", "context": 7}
    with pytest.raises(EngineError, match="dataset"):
        TrainConfig.from_dict({"output_dir": "o"})
    with pytest.raises(EngineError, match="size"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "huge"})


# --- learning ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def trained(speech, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trained"))
    cfg = config(speech, out, epochs=15, batch_size=8, warmup_steps=10,
                 transmorgrifier={"enabled": True, "iterations": 30})
    result = train(cfg, events.StopFlag())
    return cfg, result


def test_ctc_learns_real_speech(trained, speech, capsys):
    cfg, result = trained
    rows = list(csv.DictReader(open(result["metrics_csv"])))
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.4 * first, (first, last)
    items = dataset.load(speech)
    waves = [load_audio(i.audio) for i in items]
    refs = [vocab.normalize(i.text) for i in items]
    model, fe, tok, arch = load_trained(os.path.join(cfg["output_dir"], "best"))
    cer_trained = scoring.cer(transcribe.greedy(model, fe, tok, arch, waves, 8), refs)
    torch.manual_seed(7)
    fresh, fe0, _ = load_base(TrainConfig.from_dict(cfg), len(tok))
    cer_fresh = scoring.cer(transcribe.greedy(fresh, fe0, tok, arch, waves, 8), refs)
    print(f"training-set CER: untrained {cer_fresh:.3f}, trained {cer_trained:.3f}", file=sys.stderr)
    assert cer_fresh > 0.9 and cer_trained < min(0.5, cer_fresh - 0.5), (cer_fresh, cer_trained)
    assert os.path.exists(result["loss_png"]) and result["epochs_completed"] == 15


def test_artifact_reloads_and_transcribes_identically(trained, speech, tmp_path, capsys):
    cfg, result = trained
    tar = result["artifact"]
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"card.json", "vocab.json", "model.safetensors", "preprocessor_config.json",
            "transmorgrifier.tm"} <= names
    ds = subset(speech, str(tmp_path / "ds"), 5, text=False)
    capsys.readouterr()
    res_tar = transcribe.run({"model": tar, "dataset": ds, "batch_size": 2}, events.StopFlag())
    items_tar = emitted(capsys, "item")
    unpacked = str(tmp_path / "unpacked")
    os.makedirs(unpacked)
    artifact.unpack(tar, unpacked)
    transcribe.run({"model": unpacked, "dataset": ds, "batch_size": 3}, events.StopFlag())
    items_dir = emitted(capsys, "item")
    assert res_tar["count"] == 5 and res_tar["rtf"] > 0 and res_tar["post_corrected"]
    assert sorted((i["id"], i["raw_text"], i["text"]) for i in items_tar) == \
        sorted((i["id"], i["raw_text"], i["text"]) for i in items_dir)
    model, fe, tok, arch = load_trained(os.path.join(cfg["output_dir"], "best"))
    waves = [load_audio(i.audio) for i in dataset.load(ds, need_text=False)]
    direct = dict(zip([f"u{i}" for i in range(5)], transcribe.greedy(model, fe, tok, arch, waves, 1)))
    assert {i["id"]: i["raw_text"] for i in items_tar} == direct
    card = artifact.read_card(unpacked)
    assert card["arch"] == "w2v2bert" and card["post_correction"] and "val_cer" in card["metrics"]


def test_continue_from_earlier_artifact(trained, speech, tmp_path, capsys):
    """A packed model from an earlier job is a base: its letters keep their ids and head rows."""
    cfg, result = trained
    old_model, _, old_tok, _ = load_trained(os.path.join(cfg["output_dir"], "best"))
    base_cfg = TrainConfig.from_dict(config("d", str(tmp_path / "o"), size="default",
                                            base_model=result["artifact"]))
    src = resolve_base(base_cfg)
    old_vocab = base_vocab(src)
    assert old_vocab == old_tok.get_vocab()
    grown = vocab.extend(old_vocab, vocab.build(["red cat zq"])[0])
    assert list(grown)[:len(old_vocab)] == list(old_vocab) and len(grown) == len(old_vocab) + 2
    model, _, _ = load_base(base_cfg, len(grown), src=src, keep_head=len(old_vocab))
    assert model.lm_head.out_features == len(grown)
    assert torch.equal(model.lm_head.weight[:len(old_vocab)], old_model.lm_head.weight)
    ds = subset(speech, str(tmp_path / "ds"), 8)
    capsys.readouterr()
    train(config(ds, str(tmp_path / "out"), size="default", base_model=result["artifact"], epochs=1),
          events.StopFlag())
    first = [e["loss"] for e in emitted(capsys, "progress")][0]
    assert first < 2.0, first  # a fresh tiny model starts near 4.6: the earlier training carried over


# --- resume and stop -------------------------------------------------------------------------

def test_resume_continues_from_saved_step(speech, tmp_path, capsys):
    ds = subset(speech, str(tmp_path / "ds"), 12)
    full = config(ds, str(tmp_path / "full"), epochs=2)  # 3 steps per epoch
    train(full, events.StopFlag())
    cut = config(ds, str(tmp_path / "cut"), epochs=2)
    with pytest.raises(events.Interrupted):
        train(cut, StopAfter(4))
    ckpts = [e for e in emitted(capsys, "checkpoint") if e["kind"] == "resumable"]
    # polls: steps 1-3, the epoch end, step 4 -> stops mid-epoch 2 after step 4
    assert ckpts[-1]["step"] == 4 and os.path.exists(ckpts[-1]["path"])
    train({**cut, "resume": ckpts[-1]["path"]}, events.StopFlag())
    steps = [e["step"] for e in emitted(capsys, "progress")]
    assert steps[0] == 5 and max(steps) == 6
    a = load_trained(os.path.join(full["output_dir"], "best"))[0].state_dict()
    b = load_trained(os.path.join(cut["output_dir"], "best"))[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed run diverged"
    # the worker's out-of-memory retry: half the batch, twice the accumulation, same checkpoint
    half = {**cut, "output_dir": str(tmp_path / "half"), "batch_size": 2, "gradient_accumulation_steps": 2}
    train({**half, "resume": ckpts[-1]["path"]}, events.StopFlag())
    evs = emitted(capsys)
    assert any(e["event"] == "warning" and "batch size changed" in e["message"] for e in evs)
    assert [e["step"] for e in evs if e["event"] == "progress" and "val" not in e] == [5, 6]


def test_sigterm_leaves_resumable_checkpoint(speech, tmp_path):
    ds = subset(speech, str(tmp_path / "ds"), 8)
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(config(ds, str(tmp_path / "out"), epochs=500)))
    env = {**os.environ, "PYTHONPATH": ENGINES, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gpuworker_engines", "w2v2bert", "train",
                             "--config", str(cfg_path)], cwd=ENGINES, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    lines += [json.loads(x) for x in proc.stdout]
    assert proc.wait(timeout=120) == events.EXIT_INTERRUPTED
    ck = [e for e in lines if e["event"] == "checkpoint" and e["kind"] == "resumable"]
    assert ck, lines
    state = torch.load(ck[-1]["path"], weights_only=False)
    assert state["step"] == ck[-1]["step"] >= 1 and "optimizer" in state and "rng" in state


def test_suppress_unk(speech, tmp_path):
    v, _ = vocab.build(["red cat"])
    vocab.save(v, str(tmp_path / "vocab.json"))
    tok = tokenizer_from_vocab(str(tmp_path / "vocab.json"))
    torch.manual_seed(0)
    model, fe, arch = load_base(TrainConfig.from_dict(config("d", "o")), len(v))
    with torch.no_grad():  # a head that always prefers [UNK], then "r" as runner-up
        model.lm_head.bias[:] = 0
        model.lm_head.weight.mul_(0)
        model.lm_head.bias[v["[UNK]"]] = 10
        model.lm_head.bias[v["r"]] = 5
    waves = [load_audio(os.path.join(speech, "audio", "0.wav"))]
    assert transcribe.greedy(model, fe, tok, arch, waves) == ["[UNK]"]
    assert transcribe.greedy(model, fe, tok, arch, waves, suppress_unk=True) == ["r"]


# --- post-correction -------------------------------------------------------------------------

def test_transmorgrifier_fixes_systematic_errors(tmp_path, capfd):
    words = ("the shepherd and his sheep walk through the green field near the river "
             "while the farmer sows seed").split()
    rng = random.Random(0)

    def sentence():
        return " ".join(rng.choice(words) for _ in range(6))

    def asr_like(s):  # a recogniser that keeps hearing "ee" as "i" and "th" as "d"
        return s.replace("ee", "i").replace("th", "d")

    train_s, held_out = [sentence() for _ in range(30)], [sentence() for _ in range(5)]
    assert not set(held_out) & set(train_s)
    tm = transmorgrifier.train([asr_like(s) for s in train_s], train_s, iterations=100)
    transmorgrifier.save(tm, str(tmp_path))
    tm = transmorgrifier.load(str(tmp_path))
    before = scoring.cer([asr_like(s) for s in held_out], held_out)
    after = scoring.cer(transmorgrifier.apply(tm, [asr_like(s) for s in held_out]), held_out)
    assert before > 0.1 and after < before / 2, (before, after)
    assert capfd.readouterr().out == ""  # the library's chatter must not reach the protocol stream
    assert transmorgrifier.load(str(tmp_path / "nothing-here")) is None


# --- architectures and base models ---------------------------------------------------------

def test_wav2vec2_base_from_local_folder(speech, tmp_path, capsys):
    """A classic (raw waveform) base saved on disk loads offline and fine-tunes."""
    cfg = TrainConfig.from_dict(config("d", "o", architecture="wav2vec2"))
    model, fe, arch = load_base(cfg, 5)
    base = str(tmp_path / "base")
    model.save_pretrained(base)
    fe.save_pretrained(base)
    ds = subset(speech, str(tmp_path / "ds"), 6)
    res = train(config(ds, str(tmp_path / "out"), size="default", base_model=base, epochs=1), events.StopFlag())
    assert artifact.read_card(artifact.unpack(res["artifact"], str(tmp_path / "x")))["arch"] == "wav2vec2"
    losses = [e["loss"] for e in emitted(capsys, "progress")]
    assert losses and all(math.isfinite(x) for x in losses)


def test_unsupported_base_model_type(tmp_path, speech):
    base = tmp_path / "bert"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "bert"}))
    ds = subset(speech, str(tmp_path / "ds"), 4)
    with pytest.raises(EngineError, match="unsupported base model type 'bert'"):
        train(config(ds, str(tmp_path / "out"), size="default", base_model=str(base)), events.StopFlag())


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors(speech, tmp_path, capsys):
    src = os.path.join(speech, "audio", "0.wav")
    silent = str(tmp_path / "silent.wav")
    sf.write(silent, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    out = str(tmp_path / "out")

    empty = write_dataset(str(tmp_path / "empty"), [{"id": "a", "text": "  ", "audio": src}])
    with pytest.raises(EngineError, match="item a has empty text"):
        train(config(empty, out), events.StopFlag())

    missing = write_dataset(str(tmp_path / "missing"), [{"id": "b", "text": "hi", "audio": "nope.wav"}])
    with pytest.raises(EngineError, match="audio file missing"):
        train(config(missing, out), events.StopFlag())
    with pytest.raises(EngineError, match="audio file missing"):
        transcribe.run({"model": out, "dataset": missing}, events.StopFlag())

    all_silent = write_dataset(str(tmp_path / "silent"), [{"id": "c", "text": "hi", "audio": silent}])
    with pytest.raises(EngineError, match="no usable training items: c: audio is silent"):
        train(config(all_silent, out), events.StopFlag())

    mixed = write_dataset(str(tmp_path / "mixed"), [
        {"id": "c", "text": "hi", "audio": silent}, {"id": "d", "text": "red cat", "audio": src},
        {"id": "e", "text": "!!!", "audio": src}])
    examples, skipped = data.prepare(mixed, {"lowercase": True, "remove_punctuation": True}, 30)
    assert [e.id for e in examples] == ["d"]
    assert {s["id"]: s["reason"] for s in skipped} == {
        "c": "audio is silent", "e": "text is empty after normalisation"}
    warnings = [e["message"] for e in emitted(capsys, "warning")]
    assert any("c: audio is silent" in w for w in warnings)

    with pytest.raises(EngineError, match="ASR model not found"):
        transcribe.run({"model": str(tmp_path / "no.tar"), "dataset": mixed}, events.StopFlag())
    with pytest.raises(EngineError, match="resume checkpoint not found"):
        train(config(mixed, out, resume=str(tmp_path / "no.pt")), events.StopFlag())


def test_transcribe_skips_silent_audio(trained, speech, tmp_path, capsys):
    silent = str(tmp_path / "silent.wav")
    sf.write(silent, np.zeros(SAMPLE_RATE // 2, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    ds = write_dataset(str(tmp_path / "ds"), [
        {"id": "s", "audio": silent}, {"id": "v", "audio": os.path.join(speech, "audio", "1.wav")}])
    capsys.readouterr()
    res = transcribe.run({"model": trained[1]["artifact"], "dataset": ds}, events.StopFlag())
    evs = emitted(capsys)
    assert res["count"] == 1 and res["skipped"] == [{"id": "s", "reason": "audio is silent"}]
    assert [e["id"] for e in evs if e["event"] == "item"] == ["v"]
    assert any(e["event"] == "warning" and "s: audio is silent" in e["message"] for e in evs)


# --- multi-process ---------------------------------------------------------------------------

def test_ddp_two_processes_gloo(speech, tmp_path):
    """torchrun with 2 CPU processes: batches are sharded and only rank 0 reports and writes."""
    ds = subset(speech, str(tmp_path / "ds"), 8)
    cfg_path = tmp_path / "config.json"
    out = tmp_path / "out"
    cfg_path.write_text(json.dumps(config(ds, str(out), epochs=1, batch_size=2)))
    env = {**os.environ, "PYTHONPATH": ENGINES, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "gpuworker_engines", "w2v2bert", "train", "--config", str(cfg_path)],
                          cwd=ENGINES, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    # 8 items in batches of 2 = 4 batches, 2 per rank: 2 optimiser steps, each reported once
    assert [e["step"] for e in evs if e["event"] == "progress" and "val" not in e] == [1, 2]
    results = [e for e in evs if e["event"] == "result"]
    assert len(results) == 1 and os.path.exists(results[0]["artifact"])
