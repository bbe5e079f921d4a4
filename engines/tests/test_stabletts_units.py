"""StableTTS engine pieces: MAS, front-ends, mel, Griffin-Lim, MCD, the train config,
durations, checkpoint references and sidecars."""
import math
import sys
import unicodedata

import numpy as np
import pytest
import torch

from gpuworker_engines import hub
from gpuworker_engines.events import EngineError
from gpuworker_engines.stabletts import ckpt, evaluate, mas
from gpuworker_engines.stabletts.ckpt import Meta
from gpuworker_engines.stabletts.config import ModelConfig, TrainConfig
from gpuworker_engines.stabletts.frontend import (PUBLISHED_SYMBOLS, FrontEnd, choose, encode_all,
                                                  graphemes, mostly_non_latin)
from gpuworker_engines.stabletts.mel import LogMel, wav_to_mel
from gpuworker_engines.stabletts.model import StableTTS, alignment
from gpuworker_engines.stabletts.synthesize import frontend_for
from gpuworker_engines.stabletts.vocoder import GriffinLim, load_vocoder

torch.set_num_threads(1)


def small_config(**kw) -> ModelConfig:
    base = dict(n_mels=16, hidden_channels=16, filter_channels=32, gin_channels=16,
                n_enc_layers=1, n_dec_layers=2)
    base.update(kw)
    return ModelConfig.from_dict(base, ModelConfig.tiny())


# ---------------------------------------------------------------- MAS

def test_mas_equals_brute_force_on_random_inputs():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        B, Tx_max, Ty_max = 3, 5, 9
        log_p = rng.normal(size=(B, Tx_max, Ty_max))
        x_lens = rng.integers(1, Tx_max + 1, size=B)
        y_lens = np.array([rng.integers(x, Ty_max + 1) for x in x_lens])
        path = mas.maximum_path_numpy(log_p, x_lens, y_lens)
        for b in range(B):
            tx, ty = x_lens[b], y_lens[b]
            want, best = mas.brute_force_path(log_p[b, :tx, :ty])
            np.testing.assert_array_equal(path[b, :tx, :ty], want)
            assert path[b].sum() == ty  # nothing outside the lengths
            assert math.isclose(float((log_p[b, :tx, :ty] * want).sum()), best)
            checked += 1
    assert checked == 180


def test_mas_rejects_text_longer_than_audio():
    with pytest.raises(ValueError):
        mas.maximum_path_numpy(np.zeros((1, 5, 3)), [5], [3])


# ---------------------------------------------------------------- front-ends

def test_graphemes_are_nfc_lower_case_with_marks_attached():
    decomposed = "E\u0301te\u0323\u0302  x"  # É, t, ệ, two spaces, x
    assert graphemes(decomposed) == ["é", "t", "ệ", " ", "x"]
    assert graphemes(decomposed, lowercase=False)[0] == "É"


def test_graphemes_table_appends_after_the_published_rows():
    fe = choose("graphemes", ["ŋgàlà, cq!"], None)
    assert fe.symbols[:401] == PUBLISHED_SYMBOLS
    assert fe.symbols[401:] == sorted({"à", "c", "q"})  # ŋ g l , ! are published symbols
    ids, unmapped = fe.encode("ŋgàlà, cq!")
    assert ids[0::2] == [0] * 11 and ids[1] == PUBLISHED_SYMBOLS.index("ŋ") and not unmapped
    round_trip = FrontEnd.from_dict(fe.to_dict())
    assert round_trip.encode("cq à") == fe.encode("cq à")
    again = choose("auto", ["zàz ñ"], round_trip)  # a graphemes base stays graphemes
    assert again.kind == "graphemes" and again.symbols[:len(fe)] == fe.symbols
    assert again.symbols[len(fe):] == ["ñ"]


def test_unmapped_characters_are_counted_not_dropped_silently():
    fe = FrontEnd("graphemes")
    ids, unmapped = encode_all(fe, ["ab ž", "žc"])
    assert unmapped == {"ž": 2, "c": 1}
    assert ids[0][1::2] == [11, 12, 68]


def test_auto_picks_uroman_for_mostly_non_latin_data():
    assert mostly_non_latin(["В начале сотворил Бог", "and some English"])
    assert not mostly_non_latin(["В начале", "and a lot more English words here"])
    assert not mostly_non_latin(["1234 ..."])
    assert choose("auto", ["በመጀመሪያ እግዚአብሔር"], None).kind == "uroman"
    assert choose("auto", ["In the beginning"], None).kind == "ipa"
    with pytest.raises(EngineError, match="published symbols"):
        choose("ipa", ["x"], choose("graphemes", ["ñ"], None))


def test_synthesis_may_switch_between_front_ends_of_the_published_symbols():
    ipa = FrontEnd("ipa")
    assert frontend_for(ipa, None, ["x"]) is ipa
    assert frontend_for(ipa, "auto", ["В начале"]).kind == "uroman"
    with pytest.raises(EngineError, match="does not fit"):
        frontend_for(ipa, "graphemes", ["x"])


# ---------------------------------------------------------------- mel + Griffin-Lim

def test_mel_frames_and_band_of_a_tone():
    cfg = ModelConfig.tiny()
    sr = cfg.sample_rate
    t = np.arange(sr) / sr
    mel = LogMel(cfg)
    m = wav_to_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), mel)
    assert m.shape == (cfg.n_mels, (sr + 2 * mel.pad - cfg.n_fft) // cfg.hop_length + 1)
    bin_1k = round(1000 * cfg.n_fft / sr)
    assert int(m[:, 10:-10].mean(1).argmax()) == int(mel.fb[bin_1k].argmax())


def test_griffin_lim_only_for_tiny_and_it_reconstructs_the_mel():
    cfg = ModelConfig.tiny()
    with pytest.raises(EngineError, match="--tts-vocoder.*GPU_WORKER_TTS_VOCODER"):
        load_vocoder(None, cfg, "default")
    with pytest.raises(EngineError, match="not found"):
        load_vocoder("/nonexistent/vocos.pt", cfg, "tiny")
    sr = cfg.sample_rate
    t = np.arange(sr // 2) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    mel = LogMel(cfg)
    m = wav_to_mel(wav, mel)
    voc, desc = load_vocoder(None, cfg, "tiny")
    assert isinstance(voc, GriffinLim) and "Griffin-Lim" in desc
    out = voc(m[None])[0].numpy()
    assert out.shape == (m.shape[1] * cfg.hop_length,)
    err = (wav_to_mel(out, mel) - m)[:, 2:-2].abs().mean().item()
    noise = wav_to_mel(np.random.default_rng(0).normal(0, 0.1, len(out)).astype(np.float32), mel)
    baseline = (noise - m)[:, 2:-2].abs().mean().item()
    assert err < 0.3 * baseline


# ---------------------------------------------------------------- MCD

def test_dtw_matches_plain_dynamic_programming():
    rng = np.random.default_rng(1)
    for N, M in ((1, 1), (3, 7), (8, 5), (6, 6)):
        cost = rng.random((N, M))
        path = evaluate.dtw(cost)
        D = np.full((N + 1, M + 1), np.inf)
        D[0, 0] = 0
        for i in range(1, N + 1):
            for j in range(1, M + 1):
                D[i, j] = cost[i - 1, j - 1] + min(D[i - 1, j], D[i, j - 1], D[i - 1, j - 1])
        assert path[0] == (0, 0) and path[-1] == (N - 1, M - 1)
        assert math.isclose(sum(cost[i, j] for i, j in path), D[N, M])


def test_mcd_is_zero_for_itself_and_small_for_a_time_stretch():
    rng = np.random.default_rng(2)
    a = rng.normal(-5, 2, size=(40, 30))
    other = rng.normal(-5, 2, size=(40, 30))
    assert evaluate.mcd(a, a) == 0.0
    assert evaluate.mcd(a, np.repeat(a, 2, axis=1)) == pytest.approx(0.0, abs=1e-9)
    assert evaluate.mcd(a, other) > 1.0


# ---------------------------------------------------------------- config

def test_train_config_defaults_and_errors():
    cfg = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "resume": None, "learning_rate": 1})
    assert (cfg.batch_size, cfg.learning_rate, cfg.frontend, cfg.from_scratch) == (8, 1.0, "auto", False)
    assert (cfg.epochs, cfg.warmup_steps, cfg.save_every_epochs) == (1000, 200, 100)
    assert cfg.model_config() == ModelConfig.published()
    with pytest.raises(EngineError, match="unknown key.*'save_interval', 'unknown_key'"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "unknown_key": 1, "save_interval": 5})
    with pytest.raises(EngineError, match="unknown model key.*'hidden'"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "model": {"hidden": 8}})
    with pytest.raises(EngineError, match="epochs"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "epochs": "ten"})
    with pytest.raises(EngineError, match="size"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "huge"})
    with pytest.raises(EngineError, match="frontend"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "frontend": "espeak"})
    tiny = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "tiny",
                                  "model": {"hidden_channels": 8}})
    assert (tiny.learning_rate, tiny.warmup_steps) == (2e-3, 10)  # the tiny preset
    assert (tiny.model_config().hidden_channels, tiny.model_config().sample_rate) == (8, 16000)
    # what a job sets wins over the preset, 0 included
    set_ = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "tiny", "warmup_steps": 0,
                                  "learning_rate": None})
    assert (set_.learning_rate, set_.warmup_steps) == (2e-3, 0)


# ---------------------------------------------------------------- durations

def test_synthesis_length_follows_predicted_durations():
    torch.manual_seed(0)
    model = StableTTS(small_config(), 12).eval()
    with torch.no_grad():
        model.dp.proj.bias.fill_(math.log(5.5))  # about six frames per token
    x = torch.randint(1, 12, (2, 15))
    x_lens = torch.tensor([15, 9])
    ref = torch.randn(1, 16, 30) - 5
    runs = {}
    for scale in (1.0, 2.0):
        out = model.synthesise(x, x_lens, ref, steps=2, temperature=1.0, cfg_scale=1.0, length_scale=scale,
                               solver="euler")
        durations = out["attn"].sum(2)
        assert torch.equal(out["mel_lengths"], durations.sum(1).long())
        assert out["mel"].shape[2] == int(out["mel_lengths"].max())
        runs[scale] = out
    assert torch.equal(runs[2.0]["attn"].sum(2).sum(1), 2 * runs[1.0]["attn"].sum(2).sum(1))
    assert torch.all(runs[1.0]["attn"][1, 9:] == 0)  # padding tokens take no frames


def test_alignment_is_contiguous_with_fractional_durations():
    p = alignment(torch.tensor([[2.5, 0.0, 2.5]]), torch.ones(1, 1, 3), torch.ones(1, 1, 6))
    assert p[0].tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]]


# ---------------------------------------------------------------- checkpoints

def test_hub_references_are_parsed_and_a_missing_hub_is_a_clear_error(monkeypatch):
    assert hub.parse_file("hf://KdaiP/StableTTS1.1/StableTTS/checkpoint_0.pt") == \
        ("KdaiP/StableTTS1.1", "StableTTS/checkpoint_0.pt", None)
    assert hub.parse_file("hf://a/b@v1/vocos.pt") == ("a/b", "vocos.pt", "v1")
    for bad in ("hf://only/repo", "hf:///x/y", "hf://a//b"):
        with pytest.raises(EngineError, match="not hf://"):
            hub.parse_file(bad)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(EngineError, match="need the huggingface_hub package"):
        ckpt.resolve("hf://a/b/c.pt")


def test_an_unreachable_hub_names_the_reference(monkeypatch):
    import huggingface_hub

    def offline(*a, **kw):
        raise ConnectionError("no network")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(EngineError,
                       match=r"^hf://a/b/c\.pt: cannot fetch from the Hugging Face hub .*no network.*local path"):
        ckpt.resolve("hf://a/b/c.pt")


def test_sidecar_round_trip_and_strict_loading(tmp_path):
    cfg = small_config()
    fe = choose("graphemes", ["ñandú"], None)
    torch.manual_seed(1)
    model = StableTTS(cfg, len(fe))
    path = str(tmp_path / "best_model.pt")
    side = ckpt.save_model(model, Meta(cfg, fe, "tiny", "scratch", {"epoch": 3}, published=False), path)
    assert side == str(tmp_path / "best_model.json")
    loaded, meta = ckpt.load_model(path)
    assert (meta.config, meta.frontend.symbols, meta.size, meta.info["epoch"]) == (cfg, fe.symbols, "tiny", 3)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    (tmp_path / "best_model.json").unlink()  # without its sidecar it reads as published: refused
    with pytest.raises(EngineError, match="has no sidecar.*published StableTTS v1.1.*missing"):
        ckpt.load_model(path)
    with pytest.raises(EngineError, match="not found"):
        ckpt.load_model(str(tmp_path / "missing.pt"))


def test_new_embedding_rows_leave_the_old_ones_alone():
    torch.manual_seed(0)
    model = StableTTS(small_config(), 401)
    before = model.encoder.emb.weight.detach().clone()
    model.extend_vocab(405)
    after = model.encoder.emb.weight.detach()
    assert after.shape == (405, before.shape[1]) and torch.equal(after[:401], before)
    assert after[401:].abs().sum() > 0
    assert unicodedata.normalize("NFC", "é") in graphemes("e\u0301")
