"""Configuration of the mms engine: adapter fine-tuning of a multilingual wav2vec2 base.

Every shared key of `train` and `transcribe` is listed in ctc/config.py; this engine adds:

    language          ISO 639-3 code; the base's published adapter for it
                      (adapter.<language>.safetensors) is the starting point, else a fresh
                      adapter is trained ("und" when not given)
    adapter_attn_dim  size of fresh adapters when the base has none (MMS's own: 16)
    base_model        default facebook/mms-1b-all (CC-BY-NC 4.0: non-commercial use only)
    base_checkpoint   an earlier mms artifact: its adapter and vocabulary continue
`transcribe` also takes base_model (default: the one recorded in the artifact).

Recipe keys left out or null (the MMS adapter recipe): lr 1e-3, batch 16, effective
batch 32, warmup 100, mask_time_prob 0.05, dropouts 0, layer drop 0. Only the adapter
layers and the output head train: a few million parameters for the 1B base.
"""
import re
from dataclasses import dataclass

from ..ctc.config import CTCConfig
from ..events import EngineError

LANGUAGE = re.compile(r"^[a-z]{3}(-[A-Za-z_]+)?$")
RECIPES = {
    "wav2vec2": dict(learning_rate=1e-3, batch_size=16, effective_batch=32, warmup_steps=100,
                     mask_time_prob=0.05, dropout=0.0, layerdrop=0.0, add_adapter=False),
}


@dataclass
class TrainConfig(CTCConfig):
    RECIPES = RECIPES
    ENGINE = "mms"

    base_model: str = "facebook/mms-1b-all"
    architecture: str = "wav2vec2"
    adapter_attn_dim: int = 16

    def validate(self) -> None:
        super().validate()
        if self.architecture != "wav2vec2":
            raise EngineError("config: the mms engine adapts wav2vec2 bases only (architecture wav2vec2)")
        if self.language is not None and not LANGUAGE.match(self.language):
            raise EngineError(f"config: language must be an ISO 639-3 code (e.g. \"nhx\", MMS also "
                              f"writes \"srp-script_latin\"), not {self.language!r}")
