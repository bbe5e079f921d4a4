"""StableTTS engine pieces: MAS, symbols, mel, vocoders, MCD, LR schedule, durations."""
import math
import unicodedata

import numpy as np
import pytest
import torch

from gpuworker_engines.events import EngineError
from gpuworker_engines.stabletts import evaluate, mas, train
from gpuworker_engines.stabletts.config import ModelConfig, TrainConfig
from gpuworker_engines.stabletts.mel import MelSpectrogram, mel_filterbank, wav_to_mel
from gpuworker_engines.stabletts.model import StableTTS, expand_path
from gpuworker_engines.stabletts.text import UNK, SymbolTable, graphemes
from gpuworker_engines.stabletts.vocoder import GriffinLim, Vocos, load_vocoder

torch.set_num_threads(1)


def small_config(**kw) -> ModelConfig:
    base = dict(n_mels=16, hidden=16, filter=32, style_dim=8, dp_filter=16,
                decoder_hidden=16, decoder_filter=32, dropout=0.0, dp_dropout=0.0)
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


def test_mas_torch_wrapper_gives_one_token_per_frame():
    log_p = torch.randn(2, 4, 10)
    x_mask = torch.tensor([[[1, 1, 1, 1]], [[1, 1, 0, 0]]], dtype=torch.float32)
    y_mask = torch.tensor([[[1] * 10], [[1] * 6 + [0] * 4]], dtype=torch.float32)
    path = mas.maximum_path(log_p, x_mask, y_mask)
    assert path.shape == (2, 4, 10)
    assert torch.equal(path.sum(1), y_mask[:, 0])  # each real frame on exactly one token
    assert (path[0].sum(1) >= 1).all() and (path[1, :2].sum(1) >= 1).all()


def test_mas_rejects_text_longer_than_audio():
    with pytest.raises(ValueError):
        mas.maximum_path_numpy(np.zeros((1, 5, 3)), [5], [3])


# ---------------------------------------------------------------- symbols

def test_graphemes_are_nfc_with_marks_attached():
    decomposed = "e\u0301te\u0323\u0302"  # é, then e with dot below and circumflex
    table = SymbolTable.build([decomposed], add_blank=False)
    assert graphemes(unicodedata.normalize("NFC", decomposed)) == ["é", "t", "ệ"]
    composed_ids, unknown = table.encode("\u00e9t\u1ec7")
    assert unknown == {}
    assert composed_ids == table.encode(decomposed)[0]
    assert len(table) == 2 + 3


def test_unknown_characters_map_deterministically():
    table = SymbolTable.build(["abc e"], add_blank=False)
    ids, unknown = table.encode("é Z q")
    assert unknown == {"é": "e", "Z": UNK, "q": UNK}
    assert ids == [table.index["e"], table.index[" "], 1, table.index[" "], 1]
    assert table.encode("é Z q") == (ids, unknown)
    # upper case falls back to the known lower case
    assert table.encode("A")[1] == {"A": "a"}


def test_blanks_are_interspersed():
    table = SymbolTable.build(["ab"])
    ids, _ = table.encode("ab")
    assert ids == [0, table.index["a"], 0, table.index["b"], 0]


def test_symbol_extension_keeps_old_embeddings():
    table = SymbolTable.build(["hello world"])
    old_index = dict(table.index)
    model = StableTTS(small_config(), len(table))
    before = model.encoder.embed.weight.detach().clone()
    new = table.extend(["ŋgàlà hello"])
    assert new == sorted({"ŋ", "g", "à"})
    assert all(table.index[s] == i for s, i in old_index.items())
    model.extend_symbols(len(table))
    after = model.encoder.embed.weight.detach()
    assert after.shape[0] == len(table) == before.shape[0] + 3
    assert torch.equal(after[:before.shape[0]], before)
    assert after[before.shape[0]:].abs().sum() > 0
    round_trip = SymbolTable.from_dict(table.to_dict())
    assert round_trip.encode("ŋgàlà") == table.encode("ŋgàlà")


# ---------------------------------------------------------------- mel + vocoders

def test_mel_frames_and_band_of_a_tone():
    cfg = ModelConfig.tiny()
    sr = cfg.sample_rate
    t = np.arange(sr) / sr
    mel = MelSpectrogram(cfg)
    m = wav_to_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), mel)
    assert m.shape == (cfg.n_mels, sr // cfg.hop_length)
    fb = mel_filterbank(sr, cfg.n_fft, cfg.n_mels, 0, None)
    bin_1k = round(1000 * cfg.n_fft / sr)
    assert int(m[:, 10:-10].mean(1).argmax()) == int(fb[:, bin_1k].argmax())


def test_default_front_end_matches_published_settings():
    cfg = ModelConfig.default()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels) == (44100, 2048, 512, 128)


def test_vocos_weights_load_from_a_local_file(tmp_path):
    cfg = ModelConfig.tiny()
    torch.manual_seed(0)
    net = Vocos(cfg.n_mels, 32, 48, 2, cfg.n_fft, cfg.hop_length)
    path = tmp_path / "vocos.pt"
    torch.save({"state_dict": {"vocos." + k: v for k, v in net.state_dict().items()}}, path)
    loaded, desc = load_vocoder(str(path), cfg)
    assert "Vocos" in desc and "2 layers" in desc
    mel = torch.randn(1, cfg.n_mels, 20) - 4
    with torch.no_grad():
        want, got = net(mel), loaded(mel)
    assert got.shape == (1, 20 * cfg.hop_length)
    assert torch.allclose(want, got)
    other = ModelConfig.from_dict({"n_mels": cfg.n_mels + 1}, cfg)
    with pytest.raises(EngineError, match="mel bands"):
        load_vocoder(str(path), other)
    with pytest.raises(EngineError, match="not found"):
        load_vocoder(str(tmp_path / "missing.pt"), cfg)


def test_griffin_lim_fallback_reconstructs_the_mel():
    cfg = ModelConfig.tiny()
    sr = cfg.sample_rate
    t = np.arange(sr // 2) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    mel = MelSpectrogram(cfg)
    m = wav_to_mel(wav, mel)
    voc, desc = load_vocoder(None, cfg)
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
    stretched = np.repeat(a, 2, axis=1)
    other = rng.normal(-5, 2, size=(40, 30))
    assert evaluate.mcd(a, a) == 0.0
    assert evaluate.mcd(a, stretched) == pytest.approx(0.0, abs=1e-9)
    assert evaluate.mcd(a, other) > 1.0


# ---------------------------------------------------------------- schedule, config

def test_lr_is_a_pure_function_of_step():
    lrs = [train.lr_at(s, 1e-3, 10, 100, 0.1) for s in range(100)]
    assert lrs == [train.lr_at(s, 1e-3, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert train.lr_at(100, 1e-3, 10, 100, 0.1) == pytest.approx(1e-4)


def test_train_config_defaults_and_errors():
    cfg = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "unknown_key": 1,
                                 "resume": None, "learning_rate": 1})
    assert (cfg.batch_size, cfg.learning_rate, cfg.val_split, cfg.save_interval) == (8, 1.0, 0.1, 100)
    with pytest.raises(EngineError, match="epochs"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "epochs": "ten"})
    with pytest.raises(EngineError, match="size"):
        TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "huge"})
    assert TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "tiny",
                                  "model": {"hidden": 8}}).model_config().hidden == 8


# ---------------------------------------------------------------- durations

def test_synthesis_length_follows_predicted_durations():
    torch.manual_seed(0)
    model = StableTTS(small_config(), 12).eval()
    with torch.no_grad():
        model.duration_predictor.proj.bias.fill_(math.log(6.0))  # about six frames per token
    x = torch.randint(2, 12, (2, 15))
    x_lens = torch.tensor([15, 9])
    ref = torch.randn(1, 16, 30) - 5
    runs = {}
    for scale in (1.0, 2.0):
        torch.manual_seed(1)
        out = model.synthesize(x, x_lens, ref, torch.tensor([30]), steps=2, cfg_scale=1.0,
                               length_scale=scale)
        assert torch.equal(out["mel_lens"], out["durations"].sum(1).long())
        assert out["mel"].shape[2] == int(out["mel_lens"].max())
        runs[scale] = out
    # the same predicted log-durations, scaled and rounded up
    w1, w2 = runs[1.0]["durations"], runs[2.0]["durations"]
    assert torch.all(w2 >= 2 * w1 - 1) and torch.all(w2 <= 2 * w1)
    ratio = runs[2.0]["mel_lens"].float() / runs[1.0]["mel_lens"].float()
    assert torch.all((ratio > 1.75) & (ratio <= 2.0)), ratio
    assert torch.all(w1[1, 9:] == 0)  # padding tokens take no frames


def test_expand_path_is_contiguous():
    p = expand_path(torch.tensor([[2.0, 0.0, 3.0]]), 6)
    assert p[0].tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0]]
