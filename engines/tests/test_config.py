"""Every command's settings: one dataclass per command holds each default, unknown keys fail
naming them all, presets fill only what a job left out, and `schema` prints it all without torch."""
import importlib
import json
import subprocess
import sys
from dataclasses import fields

import pytest

from asr_common import ENGINES, engine_env
from gpuworker_engines import config
from gpuworker_engines.__main__ import configs, engines
from gpuworker_engines.events import EngineError
from gpuworker_engines.stabletts.config import SynthesizeConfig
from gpuworker_engines.stabletts.config import TrainConfig as TTSTrain
from gpuworker_engines.w2v2bert.config import TrainConfig as W2VTrain

NEEDS = {"dataset": "d", "output_dir": "o"}


@pytest.fixture(scope="module")
def schema() -> dict:
    proc = subprocess.run([sys.executable, "-m", "gpuworker_engines", "schema"], cwd=ENGINES,
                          env=engine_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_schema_command_imports_no_torch():
    code = ("import io, contextlib, sys\n"
            "from gpuworker_engines.__main__ import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = main(['schema'])\n"
            "heavy = [m for m in ('torch', 'numpy', 'transformers') if m in sys.modules]\n"
            "print(rc, heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ENGINES, env=engine_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "0 []", proc.stderr


def test_schema_covers_every_command_of_every_engine(schema):
    assert schema["format"] == "gpuworker-engines-schema/1"
    assert sorted(schema["engines"]) == engines() == ["hub", "mms", "stabletts", "w2v2bert"]
    for engine, commands in schema["engines"].items():
        cli = importlib.import_module(f"gpuworker_engines.{engine}.cli")
        assert sorted(commands) == sorted(cli.COMMANDS), engine
        for name, cmd in commands.items():
            cls = configs(engine)[name]
            assert cmd["summary"] and "(" not in cmd["summary"][:len(cls.__name__) + 1]
            assert list(cmd["fields"]) == [f.name for f in config._ordered(cls)]
            _check_fields(f"{engine} {name}", cmd["fields"])


def _check_fields(where: str, fields_: dict) -> None:
    for key, f in fields_.items():
        assert f["help"], (where, key)
        if f["type"] == "object":
            _check_fields(f"{where} {key}", f["fields"])
            continue
        assert f["type"] in ("int", "float", "bool", "str", "path", "list[str]", "any"), (where, key)
        assert f["unit"] in config.UNITS, (where, key)
        assert f.get("required") or "default" in f, (where, key)


def test_schema_holds_the_defaults_jobs_get(schema):
    def defaults(engine, command):
        return {k: f.get("default") for k, f in schema["engines"][engine][command]["fields"].items()}

    tts = defaults("stabletts", "train")
    assert {k: tts[k] for k in ("epochs", "batch_size", "gradient_accumulation_steps", "learning_rate",
                                "warmup_steps", "val_split", "save_every_epochs")} == \
        {"epochs": 1000, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
         "warmup_steps": 200, "val_split": 0.1, "save_every_epochs": 100}
    assert schema["engines"]["stabletts"]["train"]["presets"] == \
        {"size=tiny": {"learning_rate": 2e-3, "warmup_steps": 10}}
    syn = defaults("stabletts", "synthesize")
    assert (syn["steps"], syn["temperature"], syn["cfg_scale"], syn["length_scale"], syn["solver"]) == \
        (10, 1.0, 3.0, 1.0, "dopri5")
    assert schema["engines"]["stabletts"]["synthesize"]["presets"] == {"size=tiny": {"solver": "euler"}}
    for engine in ("w2v2bert", "mms"):
        ctc = defaults(engine, "train")
        assert (ctc["epochs"], ctc["val_split"], ctc["test_split"], ctc["save_every_steps"]) == (10, 0.1, 0.1, 500)
        assert ctc["learning_rate"] is None and "save_interval" not in ctc
        presets = schema["engines"][engine]["train"]["presets"]
        assert presets["size=tiny"]["transmorgrifier"] == {"iterations": 30}
        tr = defaults(engine, "transcribe")
        assert (tr["batch_seconds"], tr["chunk_seconds"], tr["stride_seconds"], tr["max_audio_seconds"],
                tr["decoder"]) == (240, 30, 5, 600, "auto")
    assert schema["engines"]["w2v2bert"]["train"]["presets"]["architecture=w2v2bert"]["learning_rate"] == 5e-5
    lm = schema["engines"]["w2v2bert"]["train"]["fields"]["lm"]
    assert lm["type"] == "object" and lm["fields"]["order"]["default"] == 4
    caps = schema["engines"]["w2v2bert"]["transcribe"]["fields"]["max_unpacked_bytes"]
    assert (caps["type"], caps["unit"], caps["default"]) == ("int", "bytes", 16 << 30)
    assert schema["engines"]["stabletts"]["train"]["fields"]["dataset"] == {
        "type": "path", "required": True, "unit": "", "help": "the dataset folder: index.jsonl and the recordings it names"}


def test_unknown_keys_fail_naming_them_all():
    with pytest.raises(EngineError) as e:
        W2VTrain.from_dict({**NEEDS, "save_intervall": 1, "epoch": 2, "lm": {"ordr": 3}})
    msg = str(e.value)
    assert msg.startswith("config: unknown key(s) for w2v2bert train: 'epoch', 'save_intervall' (known: ")
    assert "'lm.ordr' (known in lm: enabled, order, alpha, beta, beam_width)" in msg
    with pytest.raises(EngineError, match="unknown key.*stabletts synthesize: 'step'"):
        SynthesizeConfig.from_dict({"checkpoint": "c", "dataset": "d", "output_dir": "o",
                                    "voice_reference": "v", "step": 4})
    for engine, commands in ((e, configs(e)) for e in engines()):
        for name, cls in commands.items():
            with pytest.raises(EngineError, match="unknown key.*'not_a_key'"):
                cls.from_dict({"not_a_key": 1})


def test_null_means_the_default_and_types_are_checked():
    c = TTSTrain.from_dict({**NEEDS, "epochs": None, "learning_rate": 3, "seed": 5.0})
    assert (c.epochs, c.learning_rate, c.seed) == (1000, 3.0, 5)
    for bad, match in (({"epochs": "ten"}, "epochs has a wrong type"), ({"epochs": 1.5}, "wrong type"),
                       ({"from_scratch": 1}, "from_scratch has a wrong type"), ({"epochs": 0}, "at least 1"),
                       ({"val_split": 1.5}, "val_split must be at most"), ({"size": "huge"}, "one of default, tiny"),
                       ({"dataset": ""}, "stabletts train needs dataset")):
        with pytest.raises(EngineError, match=match):
            TTSTrain.from_dict({**NEEDS, **bad})
    with pytest.raises(EngineError, match="lm must be an object"):
        W2VTrain.from_dict({**NEEDS, "lm": True})


def test_presets_fill_only_what_the_job_left_out():
    c = W2VTrain.from_dict({**NEEDS, "size": "tiny", "warmup_steps": 0, "transmorgrifier": {"device": "cpu"}})
    c.resolve("w2v2bert")  # the tiny preset wins over the architecture's
    assert (c.learning_rate, c.batch_size, c.warmup_steps, c.gradient_accumulation_steps) == (3e-3, 8, 0, 1)
    assert (c.transmorgrifier.iterations, c.transmorgrifier.device) == (30, "cpu")
    d = W2VTrain.from_dict({**NEEDS, "transmorgrifier": {"iterations": 7}, "size": "tiny"})
    assert d.transmorgrifier.iterations == 7
    e = W2VTrain.from_dict({**NEEDS, "batch_size": 4})
    e.resolve("wav2vec2")
    assert (e.learning_rate, e.batch_size, e.gradient_accumulation_steps, e.mask_time_prob) == (3e-4, 4, 8, 0.05)
    s = SynthesizeConfig.from_dict({"checkpoint": "c", "dataset": "d", "output_dir": "o", "voice_reference": "v"})
    s.preset("size", "default")
    assert s.solver == "dopri5"
    s.preset("size", "tiny")
    assert s.solver == "euler"
    chosen = SynthesizeConfig.from_dict({"checkpoint": "c", "dataset": "d", "output_dir": "o",
                                         "voice_reference": "v", "solver": "midpoint"})
    chosen.preset("size", "tiny")
    assert chosen.solver == "midpoint"


def test_settings_round_trip_as_plain_values():
    c = W2VTrain.from_dict({**NEEDS, "lm": {"order": 3}})
    d = c.to_dict()
    assert d["lm"]["order"] == 3 and isinstance(d["text_normalization"], dict)
    json.dumps(d)
    assert {f.name for f in fields(W2VTrain)} == set(d)
    assert W2VTrain.of(c) is c
