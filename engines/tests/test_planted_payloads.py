"""A payload planted at each place where a job reads a file that may come from a project:
the engine refuses it with the file's path as the config gave it, nothing runs (the marker
file never appears) and nothing is written outside the job's folder."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_common import ENGINES, PHRASES, StopAfter, emitted, engine_env, speech_dataset, tiny_config
from gpuworker_engines import events, untrusted
from gpuworker_engines.ctc import corrector
from gpuworker_engines.events import EngineError
from gpuworker_engines.mms.train import train as mms_train
from gpuworker_engines.mms.transcribe import run as mms_transcribe
from gpuworker_engines.stabletts import ckpt, train
from gpuworker_engines.stabletts.config import ModelConfig, TrainConfig
from gpuworker_engines.stabletts.frontend import choose
from gpuworker_engines.stabletts.model import StableTTS
from gpuworker_engines.w2v2bert.train import train as w2v2bert_train
from gpuworker_engines.w2v2bert.transcribe import run as w2v2bert_transcribe
from payloads import RunsCommand, RunsPython, carries_code, hostile_tars, plant, zip_with
from test_stabletts_train import SMALL, espeak_dataset, run_cli, run_in_process, train_config

torch.set_num_threads(1)
TRAIN = {"w2v2bert": w2v2bert_train, "mms": mms_train}


@pytest.fixture(autouse=True)
def default_limits():
    untrusted.configure({})
    yield
    untrusted.configure({})


@pytest.fixture(scope="module")
def tts_speech(tmp_path_factory) -> Path:
    return espeak_dataset(tmp_path_factory.mktemp("tts"), texts=["let there be light", "the first day"])


@pytest.fixture(scope="module")
def asr_speech(tmp_path_factory) -> str:
    return speech_dataset(str(tmp_path_factory.mktemp("asr")), PHRASES[:8])


@pytest.fixture(scope="module")
def artifacts(asr_speech, tmp_path_factory) -> dict[str, str]:
    """Honest artifacts of both ASR engines (tiny models, one epoch, no LM or corrector)."""
    out = {}
    for engine in ("w2v2bert", "mms"):
        d = str(tmp_path_factory.mktemp(engine))
        out[engine] = TRAIN[engine](tiny_config(asr_speech, d, epochs=1, language="xyz"),
                                    events.StopFlag())["artifact"]
    return out


def run_engine(engine: str, command: str, config: dict, tmp: Path, resume: str | None = None):
    """The engine as the worker runs it: (exit code, events)."""
    path = tmp / f"{engine}-{command}.json"
    path.write_text(json.dumps(config))
    args = [sys.executable, "-m", "gpuworker_engines", engine, command, "--config", str(path)]
    proc = subprocess.run(args + (["--resume", resume] if resume else []), cwd=ENGINES, env=engine_env(),
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


def error_of(evs: list[dict]) -> str:
    return next(e["message"] for e in evs if e["event"] == "error")


def tree(folder) -> set[str]:
    return {os.path.relpath(os.path.join(r, n), folder) for r, ds, fs in os.walk(folder) for n in ds + fs}


def repack(artifact: str, out: str, change) -> str:
    """The artifact unpacked, changed by change(folder), packed again as out."""
    folder = out + ".d"
    with tarfile.open(artifact) as t:
        t.extractall(folder, filter="data")
    change(folder)
    with tarfile.open(out, "w") as t:
        for name in sorted(os.listdir(folder)):
            t.add(os.path.join(folder, name), arcname=name)
    shutil.rmtree(folder)
    return out


# --- StableTTS -------------------------------------------------------------------------------------

def test_stabletts_resume_checkpoint_with_a_payload_fails_the_job_naming_it(tts_speech, tmp_path):
    marker = tmp_path / "ran"
    first, _ = run_in_process(train.run, train_config(tts_speech, tmp_path / "a", epochs=1, model=SMALL))
    honest = torch.load(first["resumable"], weights_only=True)  # our own file loads as plain data
    planted = plant(tmp_path / "resume.pt", marker, honest)
    assert carries_code(planted)
    code, evs = run_cli("train", train_config(tts_speech, tmp_path / "b", epochs=2, model=SMALL), tmp_path,
                        resume=planted)
    assert code == 1
    assert error_of(evs).startswith(f"{planted}: refused: not a plain tensor file (it would run code when loaded: ")
    assert next(e for e in evs if e["event"] == "error")["kind"] == "refused"
    assert not marker.exists() and not (tmp_path / "b" / "final_model.pt").exists()
    # a checkpoint of an earlier version kept numpy's RNG state as an array object: refused, named
    old = tmp_path / "old.pt"
    torch.save({**honest, "rng": {**honest["rng"], "numpy": np.random.get_state()}}, old)
    with pytest.raises(EngineError, match=f"^{old}: refused: not a plain tensor file"):
        ckpt.read_resumable(str(old))
    torch.save({**honest, "meta": {"format": "x"}}, old)
    with pytest.raises(EngineError, match=f"^{old}: not a resumable checkpoint of this engine"):
        ckpt.read_resumable(str(old))
    # valid tensors, but a key missing or of the wrong type: the job fails naming the file
    resume = train_config(tts_speech, tmp_path / "c", epochs=2, model=SMALL, resume=str(old))
    honest.pop("epoch_sums")
    torch.save(honest, old)
    unfit = f"^{old}: not a resumable checkpoint of this engine"
    with pytest.raises(EngineError, match=unfit + r" \(KeyError: 'epoch_sums'"):
        run_in_process(train.run, resume)
    torch.save({**honest, "epoch_sums": {"flow": 0.0}}, old)
    with pytest.raises(EngineError, match=unfit + r" \(ValueError: its position"):
        run_in_process(train.run, resume)


def test_stabletts_base_checkpoint_with_a_payload_is_refused(tts_speech, tmp_path):
    marker = tmp_path / "ran"
    base = plant(tmp_path / "checkpoint_0.pt", marker, {"encoder.emb.weight": torch.zeros(3, 4)}, RunsPython)
    with pytest.raises(EngineError, match=f"^{base}: refused: not a plain tensor file \\(it would run code"):
        ckpt.load_model(base)
    tc = TrainConfig.from_dict({"dataset": str(tts_speech), "output_dir": str(tmp_path / "out"),
                                "base_checkpoint": base})
    with pytest.raises(EngineError, match=f"^{base}: refused"):
        train.starting_model(tc, ["let there be light"])
    assert not marker.exists()


def test_stabletts_sidecar_that_is_deep_huge_or_malformed_is_refused(tmp_path):
    cfg = ModelConfig.from_dict(SMALL)
    path = str(tmp_path / "best_model.pt")
    fe = choose("graphemes", ["abcde"], None)
    side = ckpt.save_model(StableTTS(cfg, len(fe)), ckpt.Meta(cfg, fe, "tiny", "scratch", published=False), path)
    assert ckpt.load_model(path)[1].config == cfg  # the honest pair loads
    honest = open(side).read()
    cases = [("[" * 100_000, "refused: JSON nested too deeply"),
             (honest[:-1] + ', "pad": "' + "a" * (2 << 20) + '"}', "refused: JSON larger than max_json_bytes"),
             (json.dumps({**json.loads(honest), "model_config": 5}), "not a sidecar of this engine")]
    untrusted.configure({"max_json_bytes": 1 << 20})
    for content, why in cases:
        Path(side).write_text(content)
        with pytest.raises(EngineError, match=f"^{side}: {why}"):
            ckpt.load_model(path)


# --- CTC engines -----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["w2v2bert", "mms"])
def test_ctc_resume_checkpoint_with_a_payload_fails_the_job_naming_it(engine, asr_speech, tmp_path, capsys):
    marker = tmp_path / "ran"
    cfg = tiny_config(asr_speech, str(tmp_path / "a"), epochs=2, language="xyz")
    with pytest.raises(events.Interrupted):
        TRAIN[engine](cfg, StopAfter(1))
    ck = {e["kind"]: e["path"] for e in emitted(capsys, "checkpoint")}
    honest = torch.load(ck["portable"], weights_only=True)  # the file that travels through the project
    planted = plant(tmp_path / "portable.pt", marker, honest, RunsPython)
    code, evs = run_engine(engine, "train", {**cfg, "output_dir": str(tmp_path / "b")}, tmp_path, resume=planted)
    assert code == 1, evs
    assert error_of(evs).startswith(f"{planted}: refused: not a plain tensor file (it would run code when loaded: ")
    assert not marker.exists() and not (tmp_path / "b" / "asr_model.tar").exists()
    # plain data of the wrong shape is named too, not a traceback
    torch.save({**honest, "model_config": "x"}, planted)
    with pytest.raises(EngineError, match=f"^{planted}: not a resumable ASR checkpoint of this version"):
        TRAIN[engine]({**cfg, "resume": planted}, events.StopFlag())
    torch.save({**honest, "arch": "bert"}, planted)
    with pytest.raises(EngineError, match=f"^{planted}: not a resumable checkpoint of this engine"):
        TRAIN[engine]({**cfg, "resume": planted}, events.StopFlag())


def test_a_base_model_that_ships_its_own_code_never_runs_it(asr_speech, tmp_path):
    marker = tmp_path / "ran"
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCTC": "evil.EvilModel"}}))
    (base / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(EngineError, match=f"load base model {base}"):
        w2v2bert_train(tiny_config(asr_speech, str(tmp_path / "out"), size="default", base_model=str(base)),
                       events.StopFlag())
    assert not marker.exists()


@pytest.fixture(scope="module")
def tars(tmp_path_factory) -> tuple[dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return hostile_tars(folder, folder / "ran"), folder / "ran"


KINDS = ["symlink to /", "hard link", "dot-dot entry", "absolute path", "device node", "named pipe", "tar bomb",
         "pickled weights"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_asr_artifact_is_refused_for_transcription_and_continuation(kind, tars, asr_speech, tmp_path):
    paths, marker = tars
    src = paths[kind]
    untrusted.configure({"max_unpacked_bytes": 16 << 20})
    job = tmp_path / "job"
    job.mkdir()
    before = tree(tmp_path)
    with pytest.raises(EngineError, match=f"^{src}: refused: "):
        w2v2bert_transcribe({"model": src, "dataset": asr_speech}, events.StopFlag())
    assert tree(tmp_path) == before
    out = job / "out"
    with pytest.raises(EngineError, match=f"^{src}: refused: "):
        w2v2bert_train({**tiny_config(asr_speech, str(out), size="default", base_checkpoint=src)},
                       events.StopFlag())
    assert not (out / "base_model").exists() and not (out / "base_model.part").exists()
    assert tree(tmp_path) - before <= {"job/out", "job/out/checkpoints"}
    assert not marker.exists() and not os.path.exists("/tmp/escaped-abs.txt")


def test_mms_adapter_with_a_payload_is_refused(artifacts, asr_speech, tmp_path):
    marker = tmp_path / "ran"

    def payload_adapter(folder):
        plant(os.path.join(folder, "adapter.xyz.safetensors"), marker, {"w": torch.zeros(2)})
    bad = repack(artifacts["mms"], str(tmp_path / "adapter.tar"), payload_adapter)
    with pytest.raises(EngineError, match=f"^{bad}/adapter.xyz.safetensors: not a readable safetensors adapter"):
        mms_transcribe({"model": bad, "dataset": asr_speech}, events.StopFlag())

    def escape_language(folder):
        conf = json.load(open(os.path.join(folder, "adapter_config.json")))
        json.dump({**conf, "language": "../../../tmp/x"}, open(os.path.join(folder, "adapter_config.json"), "w"))
    bad = repack(artifacts["mms"], str(tmp_path / "language.tar"), escape_language)
    with pytest.raises(EngineError, match="is not a language code"):
        mms_transcribe({"model": bad, "dataset": asr_speech}, events.StopFlag())
    assert not marker.exists()
    assert mms_transcribe({"model": artifacts["mms"], "dataset": asr_speech}, events.StopFlag())["items"] == 8


def test_mms_adapter_config_naming_a_local_base_or_odd_sizes_is_refused(artifacts, asr_speech, tmp_path):
    elsewhere = tmp_path / "some-local-model"
    elsewhere.mkdir()

    def with_config(**changes):
        def change(folder):
            path = os.path.join(folder, "adapter_config.json")
            conf = {**json.load(open(path)), **changes}
            json.dump({k: v for k, v in conf.items() if v is not ...}, open(path, "w"))
        return change
    cases = {
        "local base": (with_config(base_model=str(elsewhere)), "base_model .* is not a hub repository id"),
        "huge adapter": (with_config(adapter_attn_dim=1 << 30), "adapter_attn_dim must be an integer from 1"),
        "no vocab size": (with_config(vocab_size=...), "vocab_size must be an integer from 2 .* not None"),
        "text pad id": (with_config(pad_token_id="0"), "pad_token_id must be an integer"),
        "pad outside": (with_config(pad_token_id=100_000), "pad_token_id 100000 is outside the vocabulary"),
    }
    for name, (change, why) in cases.items():
        bad = repack(artifacts["mms"], str(tmp_path / f"{name.replace(' ', '_')}.tar"), change)
        with pytest.raises(EngineError, match=f"^{bad}/adapter_config.json: {why}"):
            mms_transcribe({"model": bad, "dataset": asr_speech}, events.StopFlag())
    # continuing such an adapter: refused before any base is loaded
    bad = str(tmp_path / "local_base.tar")
    with pytest.raises(EngineError, match=f"^{bad}/adapter_config.json: base_model .* is not a hub repository id"):
        mms_train(tiny_config(asr_speech, str(tmp_path / "out"), size="default", base_checkpoint=bad),
                  events.StopFlag())
    # the job's own base, or a hub id, is taken
    same = repack(artifacts["mms"], str(tmp_path / "same.tar"), with_config(base_model=str(elsewhere)))
    with pytest.raises(EngineError, match="load base model"):  # an empty folder: read, not refused
        mms_transcribe({"model": same, "dataset": asr_speech, "base_model": str(elsewhere)}, events.StopFlag())
    hub_id = repack(artifacts["mms"], str(tmp_path / "hub.tar"), with_config(base_model="team/no-such-base"))
    with pytest.raises(EngineError,
                       match="^(load base model team/no-such-base|team/no-such-base: not in the local cache)"):
        mms_transcribe({"model": hub_id, "dataset": asr_speech}, events.StopFlag())


def test_post_correction_model_with_a_payload_is_refused(artifacts, asr_speech, tmp_path):
    marker = tmp_path / "ran"
    models = tmp_path / "models"
    models.mkdir()
    pickled = str(tmp_path / "p.pt")
    plant(pickled, marker, {}, RunsCommand)
    params = json.dumps({"version": 2, "leading_context": 7, "trailing_context": 7, "iterations": 10,
                         "constant_output": " "}).encode()
    cases = {
        "a torch pickle named .tm": (lambda p: shutil.copy(pickled, p), "refused: unexpected member"),
        "a pickle as the catboost model": (lambda p: zip_with(p, [("params.json", params),
                                                                  ("action.cb", open(pickled, "rb").read())]),
                                           "action.cb: refused: not a catboost binary model"),
        "an extra member": (lambda p: zip_with(p, [("params.json", params), ("action.cb", b"CBM1"),
                                                   ("model.pkl", b"x")]), "refused: unexpected member 'model.pkl'"),
        "deep params": (lambda p: zip_with(p, [("params.json", b"[" * 100_000), ("action.cb", b"CBM1")]),
                        "params.json: refused: JSON nested too deeply"),
        "odd params": (lambda p: zip_with(p, [("params.json", params.replace(b'"iterations": 10', b'"iterations": "x"')),
                                              ("action.cb", b"CBM1")]), "refused: params.json: iterations"),
    }
    for name, (make, why) in cases.items():
        folder = models / name.replace(" ", "_")
        folder.mkdir()
        tm = str(folder / corrector.FILENAME)
        make(tm)
        with pytest.raises(EngineError, match=f"^{tm}: {why}"):
            corrector.load(str(folder))
    # inside an artifact, the message names the artifact
    bad = repack(artifacts["w2v2bert"], str(tmp_path / "tm.tar"),
                 lambda f: shutil.copy(pickled, os.path.join(f, corrector.FILENAME)))
    with pytest.raises(EngineError, match=f"^{bad}/{corrector.FILENAME}: refused: unexpected member"):
        w2v2bert_transcribe({"model": bad, "dataset": asr_speech}, events.StopFlag())
    assert not marker.exists()


def test_a_zip_artifact_unpacks_like_a_tar(artifacts, asr_speech, tmp_path):
    folder = tmp_path / "unpacked"
    with tarfile.open(artifacts["w2v2bert"]) as t:
        t.extractall(folder, filter="data")
    zipped = str(tmp_path / "asr_model.zip")
    with zipfile.ZipFile(zipped, "w") as z:
        for root, _, files in os.walk(folder):
            for f in files:
                z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), folder))
    a = w2v2bert_transcribe({"model": artifacts["w2v2bert"], "dataset": asr_speech}, events.StopFlag())
    b = w2v2bert_transcribe({"model": zipped, "dataset": asr_speech}, events.StopFlag())
    assert a["items"] == b["items"] == 8 and a["model_card"] == b["model_card"]
