"""Settings of the w2v2bert engine: W2V2-BERT 2.0 and classic wav2vec2 (XLS-R, MMS
pretrained) CTC fine-tuning of the whole model.

The keys are ctc/config.py's. This engine's own: the default base, and a recipe per
architecture of the base (the presets "architecture=<arch>", below):

    w2v2bert   the W2V2-BERT 2.0 recipe: a small step on the whole model, an effective
               batch of 32, the adapter on, no time masking
    wav2vec2   the XLS-R / MMS fine-tuning recipe: a larger step, time masking, no
               adapter; the convolutional front end stays frozen
"""
from dataclasses import dataclass

from ..config import knob
from ..ctc.config import CTCConfig, TranscribeConfig

RECIPES = {
    "w2v2bert": dict(learning_rate=5e-5, batch_size=16, effective_batch=32, warmup_steps=500,
                     mask_time_prob=0.0, dropout=0.0, layerdrop=0.0, add_adapter=True),
    "wav2vec2": dict(learning_rate=3e-4, batch_size=16, effective_batch=32, warmup_steps=500,
                     mask_time_prob=0.05, dropout=0.0, layerdrop=0.0, add_adapter=False),
}


@dataclass(kw_only=True)
class TrainConfig(CTCConfig):
    """Fine-tunes a W2V2-BERT or wav2vec2 base (CTC), then adds a language model and post-correction."""
    RECIPES = RECIPES
    ENGINE = "w2v2bert"

    base_model: str = knob("facebook/w2v-bert-2.0", help="hub id or local folder of the model to fine-tune")


@dataclass(kw_only=True)
class Transcribe(TranscribeConfig):
    ENGINE = "w2v2bert"


CONFIGS = {"train": TrainConfig, "transcribe": Transcribe}
