"""Fine-tuning from published-format checkpoints: the default (published) size from
a bare state_dict, a grapheme fine-tune that keeps the published embedding rows,
synthesis through the published Vocos, and the doctor's `check`."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gpuworker_engines.events import EngineError
from gpuworker_engines.stabletts import check, ckpt, synthesize, train
from gpuworker_engines.stabletts.ckpt import Meta
from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.frontend import PUBLISHED_SYMBOLS, FrontEnd
from gpuworker_engines.stabletts.model import StableTTS
from stabletts_fixtures import FIXTURES, fixture_json
from test_stabletts_train import espeak_dataset, run_in_process, step_losses, write_dataset

torch.set_num_threads(1)
TINY_REFERENCE = fixture_json("tiny_reference.json")["constructor"]


@pytest.fixture(scope="module")
def speech44(tmp_path_factory) -> Path:
    """espeak-ng utterances at 44.1 kHz, the published model's rate; one says 'quickly'
    (c, q and r are not published symbols)."""
    texts = ["let there be light", "and there was light", "god saw the light quickly",
             "the first day"]
    return espeak_dataset(tmp_path_factory.mktemp("speech44"), rate=44100, texts=texts)


def tiny_reference_base(folder: Path, size: str = "default") -> str:
    """The fixture's small published-format checkpoint, with a sidecar naming its sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.pt"
    shutil.copy(FIXTURES / "tiny_reference.pt", path)
    c = TINY_REFERENCE
    cfg = ModelConfig(hidden_channels=c["hidden_channels"], filter_channels=c["filter_channels"],
                      n_heads=c["n_heads"], n_enc_layers=c["n_enc_layers"],
                      n_dec_layers=c["n_dec_layers"], gin_channels=c["gin_channels"])
    ckpt.write_sidecar(Meta(cfg, FrontEnd("ipa"), size, "published", published=False), str(path))
    return str(path)


def finetune_config(data: Path, out: Path, base: str, **kw) -> dict:
    cfg = {"dataset": str(data), "output_dir": str(out), "device": "cpu", "batch_size": 2,
           "val_split": 0, "learning_rate": 2e-3, "warmup_steps": 2, "progress_every_steps": 1,
           "seed": 3, "base_checkpoint": base}
    cfg.update(kw)
    return cfg


def test_default_size_fine_tunes_a_bare_published_checkpoint(speech44, tmp_path):
    torch.manual_seed(0)
    base = StableTTS(ModelConfig.published(), len(PUBLISHED_SYMBOLS))
    with torch.no_grad():  # not the zero gates of a fresh model: every block does something
        for p in base.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn_like(p) * 0.02)
    base_path = tmp_path / "checkpoint_0.pt"
    torch.save(base.state_dict(), base_path)  # the published format: a bare state_dict
    data = write_dataset(tmp_path / "three", [
        {"id": f"u{i}", "text": t, "audio": str(speech44 / f"u{i}.wav")}
        for i, t in enumerate(["let there be light", "and there was light", "the first day"])])
    result, events = run_in_process(train.run, finetune_config(
        data, tmp_path / "out", str(base_path), size="default", epochs=2, batch_size=1,
        val_split=0.34, learning_rate=1e-4))
    assert (result["base"], result["frontend"], result["parameters"]) == ("published", "ipa", 31_644_545)
    assert result["epochs_completed"] == 2 and result["steps"] == 4
    assert all(np.isfinite(e["loss"]) for e in step_losses(events).values())
    published = StableTTS(ModelConfig.published(), 401)
    for key in ("best_model", "final_model"):
        sd = torch.load(result[key], weights_only=True)
        published.load_state_dict(sd, strict=True)
    assert not torch.equal(sd["decoder.estimator.in_proj.weight"],
                           base.state_dict()["decoder.estimator.in_proj.weight"])
    meta = ckpt.read_meta(result["final_model"])
    assert (meta.size, meta.origin, meta.config) == ("default", "published", ModelConfig.published())
    with open(result["split_file"]) as f:
        split = json.load(f)
    assert len(split["train"]) == 2 and len(split["val"]) == 1

    info = check.run({"base_checkpoint": str(base_path)}, None)["base_checkpoint"]
    assert info == {"parameters": 31_644_545, "symbols": 401, "frontend": "ipa",
                    "published": True, "size": "default", "sample_rate": 44100}


def test_grapheme_fine_tune_keeps_every_published_row_and_learns(speech44, tmp_path):
    base = tiny_reference_base(tmp_path / "base")
    base_emb = torch.load(base, weights_only=True)["encoder.emb.weight"]
    # learning rate ~0: the weights as they start
    start, _ = run_in_process(train.run, finetune_config(
        speech44, tmp_path / "start", base, frontend="graphemes", epochs=1, batch_size=4,
        learning_rate=1e-12, weight_decay=0))
    meta = ckpt.read_meta(start["final_model"])
    assert meta.frontend.kind == "graphemes" and start["base"] == "fine-tuned"
    assert meta.frontend.symbols[:401] == PUBLISHED_SYMBOLS
    assert meta.frontend.symbols[401:] == ["c", "q", "r"]
    emb = torch.load(start["final_model"], weights_only=True)["encoder.emb.weight"]
    assert emb.shape == (404, base_emb.shape[1])
    torch.testing.assert_close(emb[:401], base_emb, rtol=0, atol=1e-6)
    ids, unmapped = meta.frontend.encode("the quick light")
    assert not unmapped and ids[1::2][:3] == [27, 17, 14] and 402 in ids

    result, events = run_in_process(train.run, finetune_config(
        speech44, tmp_path / "tuned", base, frontend="graphemes", epochs=40, batch_size=2))
    steps = step_losses(events)
    first = np.mean([steps[s]["loss"] for s in range(1, 5)])
    last = np.mean([steps[s]["loss"] for s in range(max(steps) - 7, max(steps) + 1)])
    assert last < 0.5 * first, (first, last)


def test_synthesis_through_the_published_vocoder(speech44, tmp_path):
    base = tiny_reference_base(tmp_path / "base")
    data = write_dataset(tmp_path / "texts", [{"id": "JHN 11:35", "text": "Jesus wept."}])
    cfg = {"checkpoint": base, "dataset": str(data), "voice_reference": str(speech44 / "u0.wav"),
           "output_dir": str(tmp_path / "wav"), "steps": 3, "device": "cpu"}
    with pytest.raises(EngineError) as e:
        run_in_process(synthesize.run, cfg)
    assert "--tts-vocoder" in str(e.value) and "GPU_WORKER_TTS_VOCODER" in str(e.value)

    result, events = run_in_process(synthesize.run, dict(cfg, vocoder=str(FIXTURES / "tiny_vocoder.pt")))
    item = next(e for e in events if e["event"] == "item")
    wav, sr = sf.read(item["path"])
    assert sr == 44100 and len(wav) % 512 == 0 and len(wav) > 0
    assert result["frontend"] == "ipa" and result["unmapped_characters"] == {}
    assert "Vocos" in result["vocoder"]


def test_check_reports_each_file_and_refuses_a_broken_one(tmp_path):
    base = tiny_reference_base(tmp_path / "base")
    out = check.run({"vocoder": str(FIXTURES / "tiny_vocoder.pt"), "base_checkpoint": base}, None)
    assert out["vocoder"]["parameters"] == 105_570 and out["vocoder"]["sample_rate"] == 44100
    assert out["base_checkpoint"]["symbols"] == 401 and out["base_checkpoint"]["frontend"] == "ipa"
    broken = tmp_path / "vocos.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(EngineError, match=f"^{broken}: refused: not a plain tensor file"):
        check.run({"vocoder": str(broken)}, None)
    torch.save({"some.weight": torch.zeros(2)}, broken)
    with pytest.raises(EngineError, match="not a Vocos state_dict"):
        check.run({"vocoder": str(broken)}, None)
    with pytest.raises(EngineError, match="model file not found"):
        check.run({"base_checkpoint": str(tmp_path / "missing.pt")}, None)
    with pytest.raises(EngineError, match="nothing to check"):
        check.run({}, None)
