"""Training follows the recipe the published StableTTS v1.1 weights were trained with, and
what it leaves behind is usable with the published code: recorded facts from KdaiP's code
(fixtures/stabletts/README.md: training_vectors, resample_vectors, kdaip_continue)."""
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gpuworker_engines.events import EngineError
from gpuworker_engines.stabletts import ckpt, data
from gpuworker_engines.stabletts.ckpt import Meta
from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.frontend import FrontEnd, choose
from gpuworker_engines.stabletts.mel import LogMel, load_wav, wav_to_mel
from gpuworker_engines.stabletts.mas import maximum_path
from gpuworker_engines.stabletts.model import StableTTS, guidance_drop, log_likelihood
from stabletts_fixtures import FIXTURES, fixture_json, tiny_reference

torch.set_num_threads(1)
SIGMA_MIN = 1e-4


@pytest.fixture(scope="module")
def recorded():
    return torch.load(FIXTURES / "training_vectors.pt", weights_only=True)


def forward(model, io, case):
    return model(io["x"], io["x_lengths"], io["y"], io["y_lengths"], io["ref"], io["ref_lengths"],
                 drop=io[f"{case}_drop"], flow_draws=(io["flow_u"], io["flow_z"]))


def padding_term(io) -> torch.Tensor:
    """What KdaiP's flow loss adds over padded frames, where its target is -(1 - s) z."""
    y_mask = (torch.arange(io["y"].shape[2])[None] < io["y_lengths"][:, None]).float().unsqueeze(1)
    return (((1 - SIGMA_MIN) * io["flow_z"]) ** 2 * (1 - y_mask)).sum() / (y_mask.sum() * io["y"].shape[1])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("case", ["mixed", "none"])
def test_losses_match_the_published_forward_with_its_guidance_drop(recorded, case):
    io = recorded
    model = tiny_reference()
    losses = forward(model, io, case)
    ours = torch.stack([losses["duration"], losses["prior"], losses["flow"] + padding_term(io)])
    assert relative(ours.detach(), io[f"{case}_losses"]) <= 1e-5, (ours, io[f"{case}_losses"])
    assert padding_term(io) > 0.1  # the difference we keep is real in this batch
    with torch.no_grad():
        c = model.ref_encoder(io["ref"], (torch.arange(io["ref"].shape[2])[None]
                                          < io["ref_lengths"][:, None]).float().unsqueeze(1))
        c = torch.where(io[f"{case}_drop"][:, None], model.fake_speaker, c)
        _, mu_x, x_mask = model.encoder(io["x"], c, io["x_lengths"])
        y_mask = (torch.arange(io["y"].shape[2])[None] < io["y_lengths"][:, None]).float().unsqueeze(1)
        path = maximum_path(log_likelihood(mu_x, io["y"]), x_mask, y_mask)
    assert torch.equal(path.long(), io[f"{case}_attn"])


def test_a_dropped_item_gives_the_published_gradients(recorded):
    io = recorded
    assert io["mixed_drop"].tolist() == [False, True, False]
    model = tiny_reference()
    losses = forward(model, io, "mixed")
    (losses["duration"] + losses["prior"] + losses["flow"]).backward()
    for name, p in model.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        want = io[f"grad.{name}"]
        if want.abs().max() == 0:
            assert grad.abs().max() == 0, name
            continue
        assert relative(grad, want) <= 1e-5, name
    # the fake speaker reached the text encoder: its gradient there is not zero
    assert io["grad.fake_speaker"].abs().max() > 0 and model.fake_speaker.grad.abs().max() > 0


def test_a_dropped_item_does_not_hear_its_reference(recorded):
    """With every item dropped, nothing the model computes depends on the reference."""
    io = recorded
    model = tiny_reference()
    everyone = torch.ones(3, dtype=torch.bool)

    def losses(ref, drop):
        out = model(io["x"], io["x_lengths"], io["y"], io["y_lengths"], ref, io["ref_lengths"],
                    drop=drop, flow_draws=(io["flow_u"], io["flow_z"]))
        return torch.stack(list(out.values())).detach()

    other = io["ref"].flip(1)
    assert torch.equal(losses(io["ref"], everyone), losses(other, everyone))
    assert not torch.allclose(losses(io["ref"], ~everyone), losses(other, ~everyone))


def test_each_item_is_dropped_with_the_published_probability():
    torch.manual_seed(0)
    drops = guidance_drop(200_000, 0.2, "cpu")
    assert drops.dtype == torch.bool and abs(drops.float().mean().item() - 0.2) < 0.005
    assert guidance_drop(8, 0.0, "cpu") is None


def test_training_mode_draws_the_drop_and_validation_does_not():
    """cfg_dropout 1 drops every item in training: the reference no longer matters."""
    cfg = ModelConfig.from_dict({"n_mels": 8, "hidden_channels": 8, "filter_channels": 8,
                                 "gin_channels": 8, "n_enc_layers": 1, "n_dec_layers": 2,
                                 "dp_dropout": 0.0, "cfg_dropout": 1.0}, ModelConfig.tiny())
    torch.manual_seed(0)
    model = StableTTS(cfg, 401)
    with torch.no_grad():
        for p in model.parameters():  # not the zero gates of a fresh model
            p.add_(torch.randn_like(p) * 0.1)
    x, lens = torch.randint(1, 401, (2, 5)), torch.full((2,), 5)
    y, ylens = torch.randn(2, 8, 12), torch.full((2,), 12)

    def losses(ref):
        out = model(x, lens, y, ylens, ref, ylens, generator=torch.Generator().manual_seed(1))
        return torch.stack(list(out.values())).detach()

    model.train()
    assert torch.equal(losses(y), losses(y.flip(1)))
    model.eval()
    assert not torch.allclose(losses(y), losses(y.flip(1)))


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [22050, 48000])
def test_references_at_other_rates_give_the_published_log_mel(tmp_path, rate):
    io = torch.load(FIXTURES / "resample_vectors.pt", weights_only=True)
    pcm = io[f"pcm_{rate}"].numpy()
    path = tmp_path / f"ref{rate}.wav"
    sf.write(path, pcm.T if pcm.ndim == 2 else pcm, rate, subtype="PCM_16")
    got = wav_to_mel(load_wav(str(path), 44100), LogMel(ModelConfig.published()))[None]
    want = io[f"log_mel_{rate}"]
    assert got.shape == want.shape
    assert (got - want).abs().mean() <= 1e-3
    with torch.no_grad():
        style = tiny_reference().ref_encoder(got, None)
    assert (style - io[f"style_{rate}"]).abs().max() <= 1e-4


# ---------------------------------------------------------------- style windows


def test_style_windows_are_the_published_slices():
    lengths = torch.tensor([5, 11, 12, 35, 96, 400])
    y = torch.arange(6 * 2 * 400, dtype=torch.float32).view(6, 2, 400) + 1
    for i, L in enumerate(lengths.tolist()):
        y[i, :, L:] = 0
    gen = torch.Generator().manual_seed(5)
    sizes = {L: set() for L in lengths.tolist()}
    for _ in range(800):
        win, wl = data.style_windows(y, lengths, gen)
        assert win.shape[2] == int(wl.max())
        for i, L in enumerate(lengths.tolist()):
            n = int(wl[i])
            sizes[L].add(n)
            start = int(win[i, 0, 0].item() - y[i, 0, 0].item())
            assert 0 <= start <= L - n
            assert torch.equal(win[i, :, :n], y[i, :, start:start + n])
            assert not win[i, :, n:].any()
    for L, seen in sizes.items():
        want = {L} if L < 12 else set(range(L // 12, L // 3 + 1))
        assert seen == want, (L, sorted(seen))


# ---------------------------------------------------------------- KdaiP's continue_training


def published_continue_rule(names: list[str]) -> dict:
    """What KdaiP's continue_training does with a folder holding `names`, as recorded in
    kdaip_continue.json: {"returns": epoch, "loads": [files]} or {"raises": "ValueError"}."""
    models, optimizers = {}, {}
    for name in names:
        if not (name.endswith(".pt") and "_" in name):
            continue
        stem, tail = name.rsplit("_", 1)
        number = tail.split(".")[0]
        if not number.lstrip("-").isdigit():
            return {"raises": "ValueError"}
        if stem.startswith("checkpoint"):
            models[int(number)] = name
        elif stem.startswith("optimizer"):
            optimizers[int(number)] = name
    both = set(models) & set(optimizers)
    if both:
        last = max(both)
        return {"returns": last + 1, "loads": [models[last], optimizers[last]]}
    return {"returns": 0, "loads": [models[max(models)]] if models else []}


def test_the_continue_rule_is_the_recorded_one():
    cases = fixture_json("kdaip_continue.json")["cases"]
    assert len(cases) >= 8 and any("raises" in c for c in cases)
    for case in cases:
        names = [n.rstrip("/") for n in case["files"]]
        got = published_continue_rule(names)
        want = {k: case[k] for k in ("returns", "loads", "raises") if k in case}
        if "raises" in want:
            want.pop("loads")
        assert got == want, case["files"]


def test_published_name_links_the_model_and_replaces_an_earlier_one(tmp_path, monkeypatch):
    best = tmp_path / "best_model.pt"
    torch.save({"w": torch.ones(2)}, best)
    first = ckpt.link_kdaip_name(str(best), 2)
    assert first == str(tmp_path / "kdaip" / "checkpoint_2.pt")
    assert os.path.samefile(first, best)
    torch.save({"w": torch.zeros(2)}, str(best) + ".new")
    os.replace(str(best) + ".new", best)  # a later best, written atomically: a new file

    def no_links(*_):
        raise OSError("links not supported")
    monkeypatch.setattr(os, "link", no_links)
    second = ckpt.link_kdaip_name(str(best), 5)
    assert os.listdir(tmp_path / "kdaip") == ["checkpoint_5.pt"]
    assert Path(second).read_bytes() == best.read_bytes()
    assert ckpt.kdaip_name(str(best)) == second
    assert published_continue_rule(os.listdir(tmp_path / "kdaip")) == {"returns": 0, "loads": ["checkpoint_5.pt"]}
    assert published_continue_rule(os.listdir(tmp_path)) == {"raises": "ValueError"}


def test_sidecar_names_the_published_constructor_and_mel_settings():
    recorded = fixture_json("kdaip_continue.json")
    layout = fixture_json("published_layout.json")["tts"]
    d = Meta(ModelConfig.published(), FrontEnd("ipa"), "default", "published", published=False).to_dict()
    assert list(d["kdaip_constructor"]) == recorded["stabletts_constructor"]
    assert d["kdaip_constructor"] == layout["constructor"]
    assert list(d["kdaip_mel_config"]) == recorded["log_mel_constructor"]
    assert d["kdaip_mel_config"] == layout["mel_config"]
    assert "KdaiP" in d["frontend"]["pipeline"]
    again = Meta.from_dict(json.loads(json.dumps(d))).to_dict()
    assert again == d  # derived keys are not carried as history


# ---------------------------------------------------------------- graphemes sidecar

LATIN = "In the beginning God created the heavens and the earth.  Ñandú\tcafe\u0301 n\u0304 ÉTÉ"
DEVANAGARI = "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की। क्\u200dष क्\u200cष"
GEEZ = "በመጀመሪያ እግዚአብሔር ሰማይንና ምድርን ፈጠረ። ሰ\u135f"


def ids_from_sidecar(sidecar: dict, text: str) -> list[int]:
    """The ids of `text` computed from best_model.json alone, following its words."""
    fe = sidecar["frontend"]
    rule = fe["segmentation"]
    assert (rule["name"], rule["version"], rule["whitespace"]) == ("gpuworker-graphemes", 1, "str.isspace")
    text = unicodedata.normalize(rule["normalization"], text)
    words, word = [], ""
    for ch in text:  # whitespace runs become one space, none at the ends
        if ch.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
    words.append(word)
    text = " ".join(w for w in words if w)
    if fe["lowercase"]:
        text = text.lower()
    attach = {chr(int(c[2:], 16)) for c in rule["attach_code_points"]}
    after = {chr(int(c[2:], 16)) for c in rule["attach_after_code_points"]}
    units = []
    for i, ch in enumerate(text):
        joins = units and (unicodedata.category(ch) in rule["attach_categories"] or ch in attach
                           or text[i - 1] in after)
        if joins:
            units[-1] += ch
        else:
            units.append(ch)
    table = {s: i for i, s in enumerate(fe["symbols"])}
    ids = [table[u] for u in units if u in table]
    blank = rule["blank_id"]
    return [blank] + [t for i in ids for t in (i, blank)]


def test_graphemes_sidecar_reproduces_the_ids_by_its_own_description(tmp_path):
    fe = choose("graphemes", [LATIN, DEVANAGARI, GEEZ], None)
    path = tmp_path / "best_model.pt"
    ckpt.write_sidecar(Meta(ModelConfig.tiny(), fe, "tiny", "scratch", published=False), str(path))
    sidecar = json.loads((tmp_path / "best_model.json").read_text(encoding="utf-8"))
    assert sidecar["frontend"]["segmentation"]["unicode_version"] == unicodedata.unidata_version
    multi = {m["symbol"]: m for m in sidecar["frontend"]["multi_code_point_symbols"]}
    for text in (LATIN, DEVANAGARI, GEEZ, "n\u0304 नमस्ते ሰ\u135f unseen ж"):
        ours, _ = fe.encode(text)
        assert ids_from_sidecar(sidecar, text) == ours, text
    # what a per-character lookup (KdaiP's cleaned_text_to_sequence) would miss
    assert {"n\u0304", "मे\u0902", "क्\u200dष", "ሰ\u135f"} <= set(multi)
    assert multi["ሰ\u135f"]["code_points"] == ["U+1230", "U+135F"]
    assert all(sidecar["frontend"]["symbols"][m["id"]] == s for s, m in multi.items())
    table = {s: i for i, s in enumerate(sidecar["frontend"]["symbols"])}
    per_char = [table[c] for c in unicodedata.normalize("NFC", DEVANAGARI) if c in table]
    assert len(per_char) != len(fe.encode(DEVANAGARI)[0][1::2])


def test_a_sidecar_with_another_graphemes_rule_is_refused():
    d = FrontEnd("graphemes").to_dict()
    d["segmentation"] = dict(d["segmentation"], version=2)
    with pytest.raises(EngineError, match="graphemes rule gpuworker-graphemes/2"):
        FrontEnd.from_dict(d)
    assert np.array_equal(FrontEnd.from_dict(FrontEnd("graphemes").to_dict()).symbols,
                          FrontEnd("graphemes").symbols)
