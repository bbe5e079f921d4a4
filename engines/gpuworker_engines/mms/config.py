"""Settings of the mms engine: adapter fine-tuning of a multilingual wav2vec2 base.

The keys are ctc/config.py's, and this engine's own below. The recipe (the preset
"architecture=wav2vec2") is MMS's adapter recipe: a large step on few parameters, as
only the adapter layers and the output head train (a few million parameters for the
1B base).
"""
import re
from dataclasses import dataclass

from ..config import knob
from ..ctc.config import CTCConfig, TranscribeConfig
from ..events import EngineError

LANGUAGE = re.compile(r"^[a-z]{3}(-[A-Za-z_]+)?$")
RECIPES = {
    "wav2vec2": dict(learning_rate=1e-3, batch_size=16, effective_batch=32, warmup_steps=100,
                     mask_time_prob=0.05, dropout=0.0, layerdrop=0.0, add_adapter=False),
}


@dataclass(kw_only=True)
class TrainConfig(CTCConfig):
    """Trains the per-language adapter of a frozen multilingual base, then adds a language model and post-correction."""
    RECIPES = RECIPES
    ENGINE = "mms"

    base_model: str = knob("facebook/mms-1b-all",
                           help="the multilingual base: a hub id or local folder (facebook/mms-1b-all "
                                "is CC-BY-NC 4.0: non-commercial use only)")
    base_checkpoint: str | None = knob(None, kind="path",
                                       help="an earlier mms artifact: its adapter and vocabulary continue")
    architecture: str = knob("wav2vec2", choices=("wav2vec2",), help="MMS bases are wav2vec2")
    language: str | None = knob(None, help="ISO 639-3 code; the base's published adapter for it "
                                           "(adapter.<language>.safetensors) is the starting point, "
                                           "else a fresh adapter is trained (\"und\" when null)")
    adapter_attn_dim: int = knob(16, min=1, help="size of fresh adapters when the base has none")

    def validate(self) -> None:
        super().validate()
        if self.language is not None and not LANGUAGE.match(self.language):
            raise EngineError(f"config: language must be an ISO 639-3 code (e.g. \"nhx\", MMS also "
                              f"writes \"srp-script_latin\"), not {self.language!r}")


@dataclass(kw_only=True)
class Transcribe(TranscribeConfig):
    ENGINE = "mms"

    base_model: str | None = knob(None, help="the base the adapter belongs to: a hub id or local "
                                             "folder (null: the one the artifact records)")


CONFIGS = {"train": TrainConfig, "transcribe": Transcribe}
