"""The mms engine on the CPU: a tiny wav2vec2 laid out like facebook/mms-1b-all (adapters per
language), real speech from espeak-ng."""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch
from safetensors.torch import load_file

from asr_common import (ENGINES, PHRASES, SAMPLE_RATE, StopAfter, emitted, engine_env, speech_dataset, subset,
                        tiny_config)
from gpuworker_engines import dataset, events
from gpuworker_engines.ctc import artifact, checkpoints, trainer
from gpuworker_engines.ctc.audio import load_audio
from gpuworker_engines.ctc.decode import Greedy, Labels
from gpuworker_engines.mms.config import TrainConfig
from gpuworker_engines.mms.model import Recipe
from gpuworker_engines.mms.train import train
from gpuworker_engines.mms.transcribe import run as transcribe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    return speech_dataset(str(tmp_path_factory.mktemp("speech")), PHRASES[:16])


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("mms-1b-all"))
    subprocess.run([sys.executable, "-m", "gpuworker_engines.ctc.tinyhub", "--out", out, "--architecture",
                    "wav2vec2", "--adapter-languages", "xyz,abc"], cwd=ENGINES, env=engine_env(), check=True,
                   capture_output=True)
    return out


def mms_config(ds, out, hub, **kw):
    c = tiny_config(ds, out, size="default", base_model=hub, language="xyz", epochs=4, batch_size=4,
                    gradient_accumulation_steps=1, learning_rate=5e-3, warmup_steps=4, val_split=0.15,
                    test_split=0.15)
    c.update(kw)
    return c


class Recording(Recipe):
    """The engine's recipe, keeping the model it built and its tensors at the start."""

    def build(self, cfg, texts):
        built = super().build(cfg, texts)
        self.model = built.model
        self.initial = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
        return built


@pytest.fixture(scope="module")
def adapted(speech, hub, tmp_path_factory):
    recipe = Recording()
    cfg = mms_config(speech, str(tmp_path_factory.mktemp("adapted")), hub, lm={"enabled": True, "order": 3})
    return recipe, cfg, trainer.train(recipe, TrainConfig.from_dict(cfg), events.StopFlag())


def test_only_adapter_and_head_change(adapted, hub):
    recipe, _, result = adapted
    final = recipe.model.state_dict()
    trained = set(recipe.model._get_adapters())
    assert any(k.startswith("lm_head") for k in trained) and any("adapter_layer" in k for k in trained)
    assert set(final) == set(recipe.initial) and len(final) > 3 * len(trained)
    for k, v in final.items():
        if k in trained:
            assert not torch.equal(v, recipe.initial[k]), f"{k} did not train"
        else:
            assert torch.equal(v, recipe.initial[k]), f"{k} changed but belongs to the frozen base"
    base = load_file(os.path.join(hub, "model.safetensors"))
    frozen = [k for k in final if k not in trained and k in base]
    assert len(frozen) > 20 and all(torch.equal(final[k], base[k]) for k in frozen)
    published = load_file(os.path.join(hub, "adapter.xyz.safetensors"))
    assert all(torch.equal(recipe.initial[k], published[k]) for k in published)  # started from the published one
    hp = result["hyperparameters"]
    assert hp["adapter_start"] == "published" and hp["trainable_parameters"] == sum(
        recipe.model.state_dict()[k].numel() for k in trained)
    losses = [float(r.split(",")[1]) for r in open(result["training_metrics_csv"]).read().splitlines()[1:]]
    assert losses[-1] < 0.8 * losses[0], losses


def test_artifact_is_small_and_reloads_with_plain_transformers(adapted, hub, speech, tmp_path, capsys):
    from transformers import AutoFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

    _, _, result = adapted
    tar = result["artifact"]
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"adapter.xyz.safetensors", "adapter_config.json", "vocab.json", "README.md", "card.json",
            "preprocessor_config.json"} <= names
    assert result["test_cer_lm"] is not None and result["lm"]["kept"] == ("language_model/lm.arpa" in names)
    assert "model.safetensors" not in names
    assert os.path.getsize(tar) < os.path.getsize(os.path.join(hub, "model.safetensors")) / 3
    unpacked = artifact.unpack(tar, str(tmp_path / "unpacked"))
    readme = open(os.path.join(unpacked, "README.md")).read()
    assert "license: cc-by-nc-4.0" in readme and "CC-BY-NC 4.0" in readme and 'target_lang="xyz"' in readme
    # the adapter API as for MMS's own languages: the file beside the base
    base = tmp_path / "base"
    base.mkdir()
    for name in os.listdir(hub):
        if name != "adapter.xyz.safetensors":  # the published one gives way to ours
            os.symlink(os.path.join(hub, name), base / name)
    shutil.copy(os.path.join(unpacked, "adapter.xyz.safetensors"), base / "adapter.xyz.safetensors")
    model = Wav2Vec2ForCTC.from_pretrained(str(base), target_lang="xyz").eval()
    fe = AutoFeatureExtractor.from_pretrained(unpacked)
    tok = Wav2Vec2CTCTokenizer.from_pretrained(unpacked)
    labels = Labels(tok.get_vocab())
    ds = subset(speech, str(tmp_path / "ds"), 4, text=False)
    plain = {}
    for it in dataset.load(ds, need_text=False):
        inputs = fe(load_audio(it.audio), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            plain[it.id] = Greedy(labels)([torch.log_softmax(model(**inputs).logits[0], -1).numpy()])[0]
    capsys.readouterr()
    # the base is a local folder: the job names it (an artifact's recorded folder is not followed)
    res = transcribe({"model": tar, "dataset": ds, "decoder": "greedy", "batch_seconds": 0.1, "base_model": hub},
                     events.StopFlag())
    ours = {e["id"]: e["raw_text"] for e in emitted(capsys, "item")}
    assert res["items"] == 4 and ours == plain and any(ours.values())
    transcribe({"model": tar, "dataset": ds, "base_model": hub}, events.StopFlag())  # the LM path runs too
    assert len(emitted(capsys, "item")) == 4


def test_language_without_published_adapter_starts_fresh(speech, hub, tmp_path):
    recipe = Recording()
    ds = subset(speech, str(tmp_path / "ds"), 8)
    res = trainer.train(recipe, TrainConfig.from_dict(mms_config(ds, str(tmp_path / "out"), hub, language="qqq",
                                                                  epochs=1)), events.StopFlag())
    assert res["hyperparameters"]["adapter_start"] == "fresh" and res["new_characters"] == []
    vocab = open(os.path.join(tmp_path / "out", "vocab.json")).read()
    assert '"[PAD]": 0' in vocab  # a vocabulary of its own, not the published one
    for lang in ("xyz", "abc"):
        published = load_file(os.path.join(hub, f"adapter.{lang}.safetensors"))
        adapter_keys = [k for k in published if "adapter_layer" in k and k.endswith("weight")]
        assert not any(torch.equal(recipe.initial[k], published[k]) for k in adapter_keys)
    assert recipe.initial["lm_head.weight"].shape[0] == res["vocabulary_size"]
    with tarfile.open(res["artifact"]) as t:
        assert "adapter.qqq.safetensors" in t.getnames()


def test_portable_checkpoint_holds_the_adapter_and_resumes_then_continues(speech, hub, tmp_path, capsys):
    ds = subset(speech, str(tmp_path / "ds"), 12)
    cfg = mms_config(ds, str(tmp_path / "cut"), hub, epochs=2, val_split=0, test_split=0)
    with pytest.raises(events.Interrupted):
        train(cfg, StopAfter(2))
    ck = {e["kind"]: e for e in emitted(capsys, "checkpoint")}
    state = torch.load(ck[checkpoints.PORTABLE]["path"], weights_only=True)
    adapter_keys = set(load_file(os.path.join(hub, "adapter.xyz.safetensors")))
    assert set(state["model"]) == adapter_keys and "optimizer" not in state
    res = train({**cfg, "resume": ck[checkpoints.PORTABLE]["path"]}, events.StopFlag())
    evs = emitted(capsys)
    assert any(e["event"] == "warning" and "optimizer moments start fresh" in e["message"] for e in evs)
    assert [e["step"] for e in evs if e["event"] == "progress" and "lr" in e][0] == ck[checkpoints.PORTABLE]["step"] + 1
    # a later job continues this adapter; a new letter gets a new output row
    extra = subset(speech, str(tmp_path / "ds2"), 8)
    index = os.path.join(extra, "index.jsonl")
    lines = open(index).read().splitlines()
    lines[0] = lines[0].replace('."', ' ñ."')
    open(index, "w").write("\n".join(lines) + "\n")
    more = train(mms_config(extra, str(tmp_path / "more"), hub, epochs=1, base_checkpoint=res["artifact"],
                            val_split=0, test_split=0), events.StopFlag())
    assert more["hyperparameters"]["adapter_start"] == "continued" and more["new_characters"] == ["ñ"]
    assert more["vocabulary_size"] == res["vocabulary_size"] + 1


def test_tiny_size_carries_its_own_base(speech, tmp_path, capsys):
    ds = subset(speech, str(tmp_path / "ds"), 8)
    res = train(tiny_config(ds, str(tmp_path / "out"), epochs=1, language="xyz"), events.StopFlag())
    with tarfile.open(res["artifact"]) as t:
        assert {"model.safetensors", "adapter.xyz.safetensors"} <= set(t.getnames())
    capsys.readouterr()
    assert transcribe({"model": res["artifact"], "dataset": ds}, events.StopFlag())["items"] == 8
