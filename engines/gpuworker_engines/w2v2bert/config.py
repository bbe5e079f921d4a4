"""Configuration of the w2v2bert engine: W2V2-BERT 2.0 and classic wav2vec2 (XLS-R, MMS
pretrained) CTC fine-tuning of the whole model.

Every key of `train` and `transcribe` is listed in ctc/config.py. A recipe key
(learning_rate, batch_size, effective_batch, warmup_steps, mask_time_prob, dropout,
layerdrop, add_adapter) left out or null takes the value of the base's architecture:

    w2v2bert   lr 5e-5, batch 16, effective batch 32 (accumulation), warmup 500,
               no time masking, dropouts 0, layer drop 0, adapter on (the W2V2-BERT recipe)
    wav2vec2   lr 3e-4, batch 16, effective batch 32, warmup 500, mask_time_prob 0.05,
               dropouts 0, layer drop 0, no adapter (the XLS-R / MMS fine-tuning recipe;
               the convolutional front end stays frozen)
    size tiny  lr 3e-3, batch 8, no accumulation, warmup 10 (a small random model)

Defaults of the other keys: base_model facebook/w2v-bert-2.0, epochs 10, val_split and
test_split 0.1, normalisation lowercase + punctuation removed, transmorgrifier on
(cap 1000 iterations, early stopping 50), lm on (order 4).
"""
from dataclasses import dataclass

from ..ctc.config import CTCConfig

RECIPES = {
    "w2v2bert": dict(learning_rate=5e-5, batch_size=16, effective_batch=32, warmup_steps=500,
                     mask_time_prob=0.0, dropout=0.0, layerdrop=0.0, add_adapter=True),
    "wav2vec2": dict(learning_rate=3e-4, batch_size=16, effective_batch=32, warmup_steps=500,
                     mask_time_prob=0.05, dropout=0.0, layerdrop=0.0, add_adapter=False),
}


@dataclass
class TrainConfig(CTCConfig):
    RECIPES = RECIPES
    ENGINE = "w2v2bert"

    base_model: str = "facebook/w2v-bert-2.0"
