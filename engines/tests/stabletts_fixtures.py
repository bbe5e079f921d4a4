"""The recorded StableTTS facts under fixtures/stabletts, and the tiny reference model
rebuilt from them, for the tests that compare against the published code."""
import json
from pathlib import Path

import torch

from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.model import StableTTS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stabletts"


def fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def fixture_tensors(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def tiny_reference() -> StableTTS:
    """The tiny reference model, loaded strictly from its bare state_dict, in eval mode
    (dropout off, as the recorded forwards ran)."""
    c = fixture_json("tiny_reference.json")["constructor"]
    cfg = ModelConfig(hidden_channels=c["hidden_channels"], filter_channels=c["filter_channels"],
                      n_heads=c["n_heads"], n_enc_layers=c["n_enc_layers"],
                      n_dec_layers=c["n_dec_layers"], kernel_size=c["kernel_size"],
                      gin_channels=c["gin_channels"], p_dropout=c["p_dropout"], n_mels=c["mel_channels"])
    model = StableTTS(cfg, c["n_vocab"])
    sd = fixture_tensors("tiny_reference.pt")
    assert list(model.state_dict()) == list(sd)  # the published key order too
    model.load_state_dict(sd, strict=True)
    return model.eval()
