"""The w2v2bert engine end to end on the CPU: tiny random models and hub-shaped tiny snapshots,
real speech from espeak-ng."""
import csv
import json
import os
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_common import (ENGINES, SAMPLE_RATE, StopAfter, emitted, engine_env, speech_dataset, subset,
                        tiny_config, write_dataset)
from gpuworker_engines import dataset, events
from gpuworker_engines.ctc import artifact, checkpoints, infer, scoring, text
from gpuworker_engines.ctc.audio import load_audio
from gpuworker_engines.ctc.decode import Greedy, Labels
from gpuworker_engines.events import EngineError
from gpuworker_engines.w2v2bert.config import TrainConfig
from gpuworker_engines.w2v2bert.model import Recipe, load_trained
from gpuworker_engines.w2v2bert.train import train
from gpuworker_engines.w2v2bert.transcribe import run as transcribe

torch.set_num_threads(1)  # the shared box: more threads oversubscribe it


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> str:
    return speech_dataset(str(tmp_path_factory.mktemp("speech")))


@pytest.fixture(scope="session")
def trained(speech, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trained"))
    cfg = tiny_config(speech, out, epochs=15, batch_size=8, val_split=0.1, test_split=0.1,
                      transmorgrifier={"enabled": True, "iterations": 60}, lm={"enabled": True, "order": 3})
    return cfg, train(cfg, events.StopFlag())


def _greedy_texts(directory, paths):
    model, fe, tok = load_trained(directory)
    lps = infer.Transcriber(model, fe, "cpu", infer.Options()).all(paths)
    return Greedy(Labels(tok.get_vocab()))(lps)


# --- learning and what a run reports -------------------------------------------------------------

def test_ctc_learns_real_speech(trained, speech):
    cfg, result = trained
    rows = list(csv.DictReader(open(result["metrics_csv"])))
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.4 * first, (first, last)
    items = dataset.load(speech)
    refs = [text.normalize(i.text) for i in items]
    cer_trained = scoring.cer(_greedy_texts(os.path.join(cfg["output_dir"], "best"), [i.audio for i in items]), refs)
    assert cer_trained < 0.5 and result["epochs_completed"] == 15, cer_trained
    assert os.path.exists(result["loss_png"])


def test_run_reports_held_out_splits_hyperparameters_and_steps(trained):
    _, r = trained
    assert (r["train_items"], r["val_items"], r["test_items"]) == (32, 4, 4)
    for k in ("val_cer", "val_wer", "test_cer", "test_wer", "test_cer_lm", "test_wer_lm"):
        assert isinstance(r[k], float), k
    hp = r["hyperparameters"]
    assert (hp["learning_rate"], hp["batch_size"], hp["gradient_accumulation_steps"], hp["effective_batch"],
            hp["warmup_steps"], hp["precision"], hp["architecture"]) == (3e-3, 8, 1, 8, 10, "fp32", "w2v2bert")
    assert {"mask_time_prob", "dropout", "layerdrop", "add_adapter"} <= set(hp)
    assert r["lm"]["excluded_cells"] == 8 and r["lm"]["order"] == 3 and r["lm"]["tuned_on_validation"]
    assert r["lm"]["kept"] and r["decoder"] == "lm" and r["test_cer_lm"] <= r["test_cer"], r["lm"]
    tm = r["transmorgrifier"]
    assert tm["seconds"] > 0 and 0 < tm["iterations"]["action"] <= 60 and isinstance(tm["kept"], bool)
    assert (r["test_cer_corrected"] is not None) == tm["kept"]
    header = next(csv.reader(open(r["metrics_csv"])))
    assert {"val_cer", "val_wer", "test_cer", "test_wer"} <= set(header)
    lines = open(r["training_metrics_csv"]).read().splitlines()
    assert lines[0] == "epoch,train_total_loss,val_total_loss" and len(lines) == 16
    assert r["vocabulary_size"] == len(text.load(os.path.join(os.path.dirname(r["artifact"]), "vocab.json")))


def test_artifact_reads_like_a_hub_model_and_transcribes_identically(trained, speech, tmp_path, capsys):
    from transformers import AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer

    cfg, result = trained
    tar = result["artifact"]
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"card.json", "README.md", "vocab.json", "model.safetensors", "preprocessor_config.json",
            "alphabet.json", "language_model/lm.arpa"} <= names
    unpacked = str(tmp_path / "unpacked")
    artifact.unpack(tar, unpacked)
    readme = open(os.path.join(unpacked, "README.md"), encoding="utf-8").read()
    assert readme.startswith("---\n") and "base_model: tiny (random)" in readme and "32 verses" in readme
    assert "| test, greedy decoding | 4 |" in readme and "language model" in readme.lower()
    ds = subset(speech, str(tmp_path / "ds"), 5, text=False)
    capsys.readouterr()
    res = transcribe({"model": tar, "dataset": ds, "decoder": "greedy"}, events.StopFlag())
    items_tar = emitted(capsys, "item")
    transcribe({"model": unpacked, "dataset": ds, "decoder": "greedy"}, events.StopFlag())
    items_dir = emitted(capsys, "item")
    assert res["items"] == 5 and res["rtf"] > 0 and res["decoder"] == "greedy"
    assert sorted((i["id"], i["raw_text"], i["text"]) for i in items_tar) == \
        sorted((i["id"], i["raw_text"], i["text"]) for i in items_dir)
    # plain transformers, one clip at a time, argmax: the same words
    model = AutoModelForCTC.from_pretrained(unpacked).eval()
    fe = AutoFeatureExtractor.from_pretrained(unpacked)
    tok = Wav2Vec2CTCTokenizer.from_pretrained(unpacked)
    for it in dataset.load(ds, need_text=False):
        inputs = fe(load_audio(it.audio), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            ids = model(**inputs).logits.argmax(-1)[0]
        plain = " ".join(tok.decode(ids).split())
        ours = next(i["raw_text"] for i in items_tar if i["id"] == it.id)
        assert plain == ours or "[UNK]" in plain
    transcribe({"model": tar, "dataset": ds}, events.StopFlag())
    assert {e["event"] for e in emitted(capsys)} >= {"item"}


def test_unknown_token_never_reaches_a_text(trained, speech, tmp_path, capsys):
    d = str(tmp_path / "unk")
    artifact.unpack(trained[1]["artifact"], d)
    model, fe, tok = load_trained(d)
    with torch.no_grad():  # a head that prefers [UNK] everywhere
        model.lm_head.bias[tok.unk_token_id] += 50
    model.save_pretrained(d)
    ds = subset(speech, str(tmp_path / "ds"), 4, text=False)
    wave = load_audio(dataset.load(ds, need_text=False)[0].audio)
    inputs = fe(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    assert (model(**inputs).logits.argmax(-1) == tok.unk_token_id).all()
    for decoder in ("greedy", "lm"):
        capsys.readouterr()
        transcribe({"model": d, "dataset": ds, "decoder": decoder}, events.StopFlag())
        texts = [i["text"] + i["raw_text"] for i in emitted(capsys, "item")]
        assert len(texts) == 4 and not any("[UNK]" in t or "[PAD]" in t or "\u2047" in t for t in texts)
        assert all(t.strip() for t in texts)


def test_long_clips_chunked_and_bounded(trained, speech, tmp_path, capsys):
    items = dataset.load(speech)[:6]
    long_wave = np.concatenate([np.concatenate([load_audio(i.audio), np.zeros(SAMPLE_RATE // 4, np.float32)])
                                for i in items])
    path = str(tmp_path / "long.wav")
    sf.write(path, long_wave, SAMPLE_RATE, subtype="PCM_16")
    ds = write_dataset(str(tmp_path / "ds"), [{"id": "long", "audio": path}])
    seconds = len(long_wave) / SAMPLE_RATE
    capsys.readouterr()
    transcribe({"model": trained[1]["artifact"], "dataset": ds, "decoder": "greedy"}, events.StopFlag())
    whole = emitted(capsys, "item")[0]["raw_text"]
    transcribe({"model": trained[1]["artifact"], "dataset": ds, "decoder": "greedy", "chunk_seconds": seconds / 3,
                "stride_seconds": 0.5}, events.StopFlag())
    chunked = emitted(capsys, "item")[0]["raw_text"]
    assert len(whole) >= 30 and scoring.cer([chunked], [whole]) < 0.15, (whole, chunked)
    res = transcribe({"model": trained[1]["artifact"], "dataset": ds, "max_audio_seconds": seconds - 1},
                     events.StopFlag())
    evs = emitted(capsys)
    assert res["items"] == 0 and res["skipped"][0]["id"] == "long" and not [e for e in evs if e["event"] == "item"]
    assert any(e["event"] == "warning" and "longer than" in e["message"] for e in evs)


# --- continuing, resuming, stopping --------------------------------------------------------------

def test_continue_from_earlier_artifact_extends_vocabulary(trained, speech, tmp_path, capsys):
    cfg, result = trained
    old_model, _, old_tok = load_trained(os.path.join(cfg["output_dir"], "best"))
    old_vocab = old_tok.get_vocab()
    rows = [json.loads(x) for x in open(os.path.join(speech, "index.jsonl"))][:8]
    for r in rows:
        r["audio"] = os.path.join(speech, r["audio"])
    rows[0]["text"] += " zq"  # two letters the earlier model never saw
    ds = write_dataset(str(tmp_path / "ds"), rows)
    c = TrainConfig.from_dict(tiny_config(ds, str(tmp_path / "o"), size="default", base_checkpoint=result["artifact"]))
    recipe = Recipe()
    c.resolve(recipe.arch(c))
    built = recipe.build(c, [text.normalize(r["text"]) for r in rows])
    assert built.info["new_characters"] == ["q", "z"]
    assert list(built.vocab)[:len(old_vocab)] == list(old_vocab) and len(built.vocab) == len(old_vocab) + 2
    assert torch.equal(built.model.lm_head.weight[:len(old_vocab)], old_model.lm_head.weight)
    capsys.readouterr()
    res = train(tiny_config(ds, str(tmp_path / "out"), size="default", base_checkpoint=result["artifact"],
                            base_model="facebook/w2v-bert-2.0", epochs=1), events.StopFlag())
    first = [e["loss"] for e in emitted(capsys, "progress")][0]
    assert first < 2.5, first  # a fresh tiny model starts near 4.6: the earlier training carried over
    assert res["new_characters"] == ["q", "z"] and res["base_model"] == "tiny (random)"


def test_a_tiny_job_naming_a_base_checkpoint_continues_it(trained, speech, tmp_path):
    """size tiny means a small random model only when the job names no model to continue."""
    cfg, result = trained
    old_model, _, old_tok = load_trained(os.path.join(cfg["output_dir"], "best"))
    ds = subset(speech, str(tmp_path / "ds"), 6)
    c = TrainConfig.from_dict(tiny_config(ds, str(tmp_path / "o"), size="tiny", base_checkpoint=result["artifact"]))
    recipe = Recipe()
    c.resolve(recipe.arch(c))
    built = recipe.build(c, [text.normalize(json.loads(x)["text"]) for x in open(os.path.join(ds, "index.jsonl"))])
    assert built.info["continued_from"] == result["artifact"]
    n = len(old_tok.get_vocab())
    assert torch.equal(built.model.lm_head.weight[:n], old_model.lm_head.weight)


def test_resume_from_full_and_portable_checkpoints(speech, tmp_path, capsys):
    ds = subset(speech, str(tmp_path / "ds"), 12)
    full = tiny_config(ds, str(tmp_path / "full"), epochs=2)  # 3 steps per epoch
    train(full, events.StopFlag())
    lrs = {e["step"]: e["lr"] for e in emitted(capsys, "progress") if "lr" in e}
    cut = tiny_config(ds, str(tmp_path / "cut"), epochs=2)
    with pytest.raises(events.Interrupted):
        train(cut, StopAfter(4))
    ckpts = {e["kind"]: e for e in emitted(capsys, "checkpoint")}
    # polls: steps 1-3, the epoch end, step 4 -> stops mid-epoch 2 after step 4
    assert ckpts["resumable"]["step"] == ckpts["portable"]["step"] == 4 and ckpts["portable"]["upload"]
    assert ckpts["portable"]["bytes"] < ckpts["resumable"]["bytes"] / 2
    assert "optimizer" not in torch.load(ckpts["portable"]["path"], weights_only=True)
    train({**cut, "resume": ckpts["resumable"]["path"]}, events.StopFlag())
    assert [e["step"] for e in emitted(capsys, "progress") if "val" not in e] == [5, 6]
    a = load_trained(os.path.join(full["output_dir"], "best"))[0].state_dict()
    b = load_trained(os.path.join(cut["output_dir"], "best"))[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed run diverged"
    # the upload-sized checkpoint: same step and schedule, fresh optimizer moments
    port = {**cut, "output_dir": str(tmp_path / "port")}
    res = train({**port, "resume": ckpts["portable"]["path"]}, events.StopFlag())
    evs = emitted(capsys)
    assert any(e["event"] == "warning" and "optimizer moments start fresh" in e["message"] for e in evs)
    assert {e["step"]: e["lr"] for e in evs if e["event"] == "progress" and "lr" in e} == {5: lrs[5], 6: lrs[6]}
    assert os.path.exists(res["artifact"])
    # the worker's out-of-memory retry: half the batch, twice the accumulation, same checkpoint
    half = {**cut, "output_dir": str(tmp_path / "half"), "batch_size": 2, "gradient_accumulation_steps": 2}
    train({**half, "resume": ckpts["resumable"]["path"]}, events.StopFlag())
    evs = emitted(capsys)
    assert any(e["event"] == "warning" and "batch size changed" in e["message"] for e in evs)
    assert [e["step"] for e in evs if e["event"] == "progress" and "val" not in e] == [5, 6]


def test_sigterm_leaves_both_checkpoints(speech, tmp_path):
    ds = subset(speech, str(tmp_path / "ds"), 8)
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(tiny_config(ds, str(tmp_path / "out"), epochs=500)))
    proc = subprocess.Popen([sys.executable, "-m", "gpuworker_engines", "w2v2bert", "train",
                             "--config", str(cfg_path)], cwd=ENGINES, env=engine_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    lines += [json.loads(x) for x in proc.stdout]
    assert proc.wait(timeout=120) == events.EXIT_INTERRUPTED
    ck = {e["kind"]: e for e in lines if e["event"] == "checkpoint"}
    state = torch.load(ck["resumable"]["path"], weights_only=True)
    assert state["step"] == ck["resumable"]["step"] >= 1 and "optimizer" in state and "rng" in state
    portable = torch.load(ck["portable"]["path"], weights_only=True)
    assert portable["step"] == state["step"] and "optimizer" not in portable and portable["schedule"]["total"] > 0


def test_checkpoint_sizes_counted_on_the_meta_device():
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC
    with torch.device("meta"):
        model = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(vocab_size=60, add_adapter=True))
    s = checkpoints.sizes(model)
    assert 5.5e8 < s["parameters"] < 6.5e8  # the w2v-bert-2.0 shape
    assert s["full_bytes"] == pytest.approx(3 * s["portable_bytes"], rel=0.01)


# --- hub-shaped bases, the recipe's defaults -----------------------------------------------------

def _tinyhub(out, arch):
    subprocess.run([sys.executable, "-m", "gpuworker_engines.ctc.tinyhub", "--out", out, "--architecture", arch],
                   cwd=ENGINES, env=engine_env(), check=True, capture_output=True)
    return out


def test_default_size_run_on_a_hub_shaped_snapshot_uses_the_recipe(speech, tmp_path):
    from transformers import Wav2Vec2BertForCTC

    base = _tinyhub(str(tmp_path / "w2v-bert-2.0"), "w2v2bert")
    assert sorted(os.listdir(base)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    ds = subset(speech, str(tmp_path / "ds"), 8)
    res = train({"dataset": ds, "output_dir": str(tmp_path / "out"), "base_model": base, "device": "cpu",
                 "epochs": 2}, events.StopFlag())
    hp = res["hyperparameters"]
    assert (hp["learning_rate"], hp["batch_size"], hp["gradient_accumulation_steps"], hp["effective_batch"],
            hp["warmup_steps"], hp["add_adapter"], hp["dropout"], hp["layerdrop"], hp["mask_time_prob"]) == \
        (5e-5, 16, 2, 32, 500, True, 0.0, 0.0, 0.0)
    assert (res["train_items"], res["val_items"], res["test_items"]) == (6, 1, 1)
    assert res["lm"] is not None and res["transmorgrifier"] is not None
    d = artifact.unpack(res["artifact"], str(tmp_path / "x"))
    assert Wav2Vec2BertForCTC.from_pretrained(d).config.add_adapter
    card = artifact.read_card(d)
    assert card["licence"] == "mit" and card["base_model"] == base
    assert "license: mit" in open(os.path.join(d, "README.md")).read()


def test_wav2vec2_base_from_a_hub_shaped_snapshot(speech, tmp_path, capsys):
    base = _tinyhub(str(tmp_path / "xls-r"), "wav2vec2")
    ds = subset(speech, str(tmp_path / "ds"), 6)
    res = train({"dataset": ds, "output_dir": str(tmp_path / "out"), "base_model": base, "device": "cpu",
                 "epochs": 1, "transmorgrifier": {"enabled": False}, "lm": {"enabled": False}}, events.StopFlag())
    assert artifact.read_card(artifact.unpack(res["artifact"], str(tmp_path / "x")))["arch"] == "wav2vec2"
    hp = res["hyperparameters"]
    assert (hp["learning_rate"], hp["mask_time_prob"], hp["add_adapter"]) == (3e-4, 0.05, False)
    losses = [e["loss"] for e in emitted(capsys, "progress")]
    assert losses and all(np.isfinite(losses))


def test_unsupported_base_model_type(tmp_path, speech):
    base = tmp_path / "bert"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "bert"}))
    ds = subset(speech, str(tmp_path / "ds"), 4)
    with pytest.raises(EngineError, match="unsupported base model type 'bert'"):
        train(tiny_config(ds, str(tmp_path / "out"), size="default", base_model=str(base)), events.StopFlag())


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors(speech, tmp_path, capsys):
    from gpuworker_engines.ctc import data

    src = os.path.join(speech, "audio", "0.wav")
    silent = str(tmp_path / "silent.wav")
    sf.write(silent, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    out = str(tmp_path / "out")
    empty = write_dataset(str(tmp_path / "empty"), [{"id": "a", "text": "  ", "audio": src}])
    with pytest.raises(EngineError, match="item a has empty text"):
        train(tiny_config(empty, out), events.StopFlag())
    missing = write_dataset(str(tmp_path / "missing"), [{"id": "b", "text": "hi", "audio": "nope.wav"}])
    with pytest.raises(EngineError, match="audio file missing"):
        train(tiny_config(missing, out), events.StopFlag())
    with pytest.raises(EngineError, match="audio file missing"):
        transcribe({"model": out, "dataset": missing}, events.StopFlag())
    all_silent = write_dataset(str(tmp_path / "silent"), [{"id": "c", "text": "hi", "audio": silent}])
    with pytest.raises(EngineError, match="no usable training items: c: audio is silent"):
        train(tiny_config(all_silent, out), events.StopFlag())
    mixed = write_dataset(str(tmp_path / "mixed"), [
        {"id": "c", "text": "hi", "audio": silent}, {"id": "d", "text": "red cat", "audio": src},
        {"id": "e", "text": "!!!", "audio": src}])
    examples, skipped = data.prepare(mixed, {"lowercase": True, "remove_punctuation": True}, 30)
    assert [e.id for e in examples] == ["d"]
    assert {s["id"]: s["reason"] for s in skipped} == {
        "c": "audio is silent", "e": "text is empty after normalisation"}
    assert any("c: audio is silent" in e["message"] for e in emitted(capsys, "warning"))
    with pytest.raises(EngineError, match="ASR model not found"):
        transcribe({"model": str(tmp_path / "no.tar"), "dataset": mixed}, events.StopFlag())
    with pytest.raises(EngineError, match="resume checkpoint not found"):
        train(tiny_config(mixed, out, resume=str(tmp_path / "no.pt")), events.StopFlag())
    with pytest.raises(EngineError, match="decoder must be one of auto, lm, greedy"):
        transcribe({"model": str(tmp_path / "no.tar"), "dataset": mixed, "decoder": "beam"}, events.StopFlag())


def test_transcribe_skips_silent_audio(trained, speech, tmp_path, capsys):
    silent = str(tmp_path / "silent.wav")
    sf.write(silent, np.zeros(SAMPLE_RATE // 2, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    ds = write_dataset(str(tmp_path / "ds"), [
        {"id": "s", "audio": silent}, {"id": "v", "audio": os.path.join(speech, "audio", "1.wav")}])
    capsys.readouterr()
    res = transcribe({"model": trained[1]["artifact"], "dataset": ds}, events.StopFlag())
    evs = emitted(capsys)
    assert res["items"] == 1 and res["skipped"] == [{"id": "s", "reason": "audio is silent"}]
    assert [e["id"] for e in evs if e["event"] == "item"] == ["v"]
    assert any(e["event"] == "warning" and "s: audio is silent" in e["message"] for e in evs)
