"""The engine computes what the published StableTTS v1.1 computes: its layout, the
tiny published-format checkpoints' recorded outputs, the log-mel, the Vocos
vocoder and the text front-end ids (fixtures/stabletts/README.md)."""
import pytest
import torch

from gpuworker_engines.stabletts import ckpt
from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.frontend import PUBLISHED_SYMBOLS, FrontEnd, mostly_non_latin
from gpuworker_engines.stabletts.mel import LogMel
from gpuworker_engines.stabletts.model import StableTTS
from gpuworker_engines.stabletts.vocoder import Vocos
from stabletts_fixtures import FIXTURES, fixture_json, fixture_tensors, tiny_reference

torch.set_num_threads(1)


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def tiny():
    return tiny_reference(), fixture_tensors("tiny_reference_io.pt")


def test_default_config_has_the_published_layout():
    layout = fixture_json("published_layout.json")["tts"]
    with torch.device("meta"):
        model = StableTTS(ModelConfig.published(), len(PUBLISHED_SYMBOLS))
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(k["key"], k["shape"], k["dtype"]) for k in layout["keys"]]
    assert ours == want
    assert sum(p.numel() for p in model.parameters()) == layout["total_parameters"] == 31_644_545
    assert len(list(model.buffers())) == 0
    cfg = ModelConfig.published()
    for k, v in layout["model_config"].items():
        assert getattr(cfg, k) == v, k
    for k in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max"):
        assert getattr(cfg, k) == layout["mel_config"][k], k


def test_published_vocoder_layout():
    layout = fixture_json("published_layout.json")["vocoder"]
    with torch.device("meta"):
        voc = Vocos()
    ours = [(k, list(v.shape)) for k, v in voc.state_dict().items()]
    assert ours == [(k["key"], k["shape"]) for k in layout["keys"]]
    assert sum(p.numel() for p in voc.parameters()) == layout["total_parameters"]


def test_symbol_table_is_the_published_one():
    table = fixture_json("symbols.json")
    assert PUBLISHED_SYMBOLS == table["symbols"] and len(PUBLISHED_SYMBOLS) == 401
    assert PUBLISHED_SYMBOLS.index(" ") == table["space_id"] == 68


def test_sub_module_outputs(tiny):
    model, io = tiny
    mask = (torch.arange(129)[None] < io["ref_mel_batch_lengths"][:, None]).float().unsqueeze(1)
    with torch.no_grad():
        assert max_diff(model.ref_encoder(io["ref_mel"], None), io["style_single"]) <= 1e-5
        assert max_diff(model.ref_encoder(io["ref_mel_batch"], mask), io["style_batch_masked"]) <= 1e-5
        h, mu, x_mask = model.encoder(io["tokens"], io["style_batch_masked"], io["token_lengths"])
        assert max_diff(h, io["enc_hidden"]) <= 1e-5
        assert max_diff(mu, io["enc_mu"]) <= 1e-5
        assert torch.equal(x_mask, io["enc_mask"])
        logw = model.dp(io["enc_hidden"], io["enc_mask"], io["style_batch_masked"])
        assert max_diff(logw, io["dp_logw"]) <= 1e-5
        est = model.decoder.estimator
        args = (io["est_x"], io["est_mask"], io["est_mu"], io["est_c"])
        assert max_diff(est(io["est_t_batch"], *args), io["est_out_tbatch"]) <= 1e-5
        assert max_diff(est(io["est_t_scalar"], *args), io["est_out_tscalar"]) <= 1e-5


def first_velocity(model, x, mask, mu, c, scale):
    """The velocity the sampler uses at t = 0: one Euler step of dt = 1 from x is x + v."""
    out = model.decoder.sample(x, mu, mask, c, model.fake_speaker, model.fake_content, 1, scale,
                               "euler")
    return out - x


def test_guided_velocity(tiny):
    model, io = tiny
    with torch.no_grad():
        est = model.decoder.estimator
        t, x, mask, mu, c = (io["est_t_scalar"], io["est_x"], io["est_mask"], io["est_mu"], io["est_c"])
        cond = est(t, x, mask, mu, c)
        uncond = est(t, x, mask, model.fake_content.expand(2, -1, 50), model.fake_speaker.expand(2, -1))
        assert max_diff(uncond + 3.0 * (cond - uncond), io["cfg_out_tscalar"]) <= 1e-5
        ones = torch.ones(1, 1, io["syn_mu_y"].shape[2])
        v0 = first_velocity(model, io["syn_noise"], ones, io["syn_mu_y"], io["style_single"], 3.0)
        assert max_diff(v0, io["syn_v0_cfg3"]) <= 1e-5
    assert torch.equal(torch.linspace(0, 1, 11), io["ode_t_grid"])


@pytest.mark.parametrize("solver,cfg_scale,name,tol", [
    ("euler", 3.0, "syn_mel_euler10_cfg3", 1e-4),
    ("midpoint", 3.0, "syn_mel_midpoint10_cfg3", 1e-4),
    ("euler", 1.0, "syn_mel_euler10_cfg1", 1e-4),
    ("dopri5", 3.0, "syn_mel_dopri5_cfg3", 1e-3),
])
def test_whole_synthesis(tiny, solver, cfg_scale, name, tol):
    model, io = tiny
    out = model.synthesise(io["syn_tokens"], io["syn_token_lengths"], io["ref_mel"], steps=10,
                           temperature=1.0, length_scale=1.0, solver=solver, cfg_scale=cfg_scale,
                           noise=io["syn_noise"])
    assert max_diff(out["logw"], io["syn_logw"]) <= 1e-5
    assert torch.equal(out["attn"].unsqueeze(1), io["syn_attn"])
    assert out["mel_lengths"].tolist() == [io["syn_attn"].shape[3]]
    assert max_diff(out["mu_y"], io["syn_mu_y"]) <= 1e-5
    assert max_diff(out["mel"], io[name]) <= tol


def test_synthesis_with_length_scale_1_25(tiny):
    model, io = tiny
    out = model.synthesise(io["syn_tokens"], io["syn_token_lengths"], io["ref_mel"], steps=10, temperature=1.0,
                           length_scale=1.25, solver="euler", cfg_scale=3.0, noise=io["syn125_noise"])
    assert torch.equal(out["attn"].unsqueeze(1), io["syn125_attn"])
    assert max_diff(out["mu_y"], io["syn125_mu_y"]) <= 1e-5
    assert max_diff(out["mel"], io["syn125_mel_euler10_cfg3"]) <= 1e-4


def test_a_bare_state_dict_of_another_size_is_refused_as_not_published():
    # a bare state_dict without a sidecar is read as the published model: the tiny one
    # must be refused with a message that says so, rather than half-loaded
    from gpuworker_engines.events import EngineError
    with pytest.raises(EngineError, match="no sidecar.*published StableTTS v1.1"):
        ckpt.load_model(str(FIXTURES / "tiny_reference.pt"))


def test_vocoder_outputs():
    io = fixture_tensors("tiny_vocoder_io.pt")
    meta = fixture_json("tiny_vocoder.json")["tensors"]
    voc = Vocos.from_file(str(FIXTURES / "tiny_vocoder.pt"))
    assert list(voc.state_dict()) == list(torch.load(FIXTURES / "tiny_vocoder.pt", weights_only=True))
    with torch.no_grad():
        assert max_diff(voc.backbone(io["voc_mel"]), io["voc_backbone"]) <= 1e-5
        for name, mel in (("voc_wave", io["voc_mel"]), ("voc_wave_batch", io["voc_mel_batch"])):
            tol = 1e-5 * max(1.0, meta[name]["max_abs_value"])
            assert max_diff(voc(mel), io[name]) <= tol
        assert max_diff(voc.head.istft(io["istft_spec"]), io["istft_out"]) <= 1e-5


def test_log_mel():
    io = fixture_tensors("mel_vectors.pt")
    mel = LogMel(ModelConfig.published())
    assert max_diff(mel.fb, io["mel_filterbank"]) <= 1e-6
    with torch.no_grad():
        assert max_diff(mel.magnitude(io["signal"][None]), io["linear_magnitude"]) <= 1e-4
        got = mel(io["signal"][None])
    diff = (got - io["log_mel"]).abs()
    assert got.shape == io["log_mel"].shape == (1, 128, (66150 + 1536 - 2048) // 512 + 1)
    assert diff.max() <= 5e-3 and diff.mean() <= 1e-4 and diff[:, :, 70:].max() <= 1e-5


def test_frontend_vectors_both_uroman_settings():
    vectors = fixture_json("frontend_vectors.json")["inputs"]
    ipa, uroman = FrontEnd("ipa"), FrontEnd("uroman")
    checked = 0
    for v in vectors:
        auto = mostly_non_latin([v["text"]])
        assert auto == v["auto_use_uroman"], v["id"]
        chosen, other = (uroman, ipa) if auto else (ipa, uroman)
        ids, unmapped = chosen.encode(v["text"])
        assert "".join(chosen.units(v["text"])) == v["after_ipa"], v["id"]
        assert ids == v["ids_interspersed"], v["id"]
        dropped = {}
        for d in v["dropped"]:
            dropped[d["char"]] = dropped.get(d["char"], 0) + 1
        assert dict(unmapped) == dropped, v["id"]
        alt = v[next(k for k in v if k.startswith("alternative_if_manifest_sets_use_uroman"))]
        assert "".join(other.units(v["text"])) == alt["after_ipa"], v["id"]
        assert other.encode(v["text"])[0] == alt["ids_interspersed"], v["id"]
        checked += 1
    assert checked == 13
