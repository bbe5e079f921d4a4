"""The knobs every CTC engine shares, and how a recipe fills the ones a job leaves out.

Keys of `train` (each engine's config module lists its own defaults):
    dataset, output_dir        the dataset folder (index.jsonl + WAVs) and where outputs go
    device                     auto | cpu | cuda
    seed
    size                       default | tiny (a small random model built in code: tests, demo)
    architecture               w2v2bert | wav2vec2, only for size tiny (else the base decides)
    base_model                 hub id or local folder of the model to fine-tune
    base_checkpoint            an earlier job's asr_model.tar (or unpacked folder) to continue
                               from; its vocabulary is extended with new letters
    language                   ISO 639-3 code, for the model card (and MMS's adapter)
    epochs
    batch_size, gradient_accumulation_steps, effective_batch
                               null: the recipe's; accumulation then makes up effective_batch
                               (per step, over all processes)
    learning_rate, warmup_steps, mask_time_prob, dropout, layerdrop, add_adapter
                               null: the recipe's (see the engine's RECIPES)
    weight_decay, max_grad_norm, warmup_max_fraction (warmup never exceeds this share of steps)
    precision                  auto (bf16, else fp16, on CUDA; fp32 on CPU) | fp32 | fp16 | bf16
    gradient_checkpointing     null: on for CUDA
    group_by_length, max_duration_s (longer training clips are skipped), threads, num_workers
    val_split                  share held out for model selection (default 0.1)
    test_split                 share held out for the report only (default 0.1); from 4 items on
                               each non-zero split gets at least one item, below 4 all items train
    min_char_count             rarer characters become the unknown token
    text_normalization         {lowercase, remove_punctuation, remove_numbers}: default on, on, off
    save_interval              optimiser steps between checkpoints
    keep_checkpoints           how many of each kind stay on disk
    progress_every_steps       steps between progress events (every step is logged on stderr)
    resume                     a resumable (full) or portable checkpoint to continue
    transmorgrifier            {enabled, iterations (cap per catboost model), early_stopping_rounds,
                               device (auto|cpu|gpu), context, learning_rate}
    lm                         {enabled, order (2-6), alpha, beta (null: tuned on validation),
                               beam_width}
    lm_corpus                  JSON lines {"cell_id", "text"}: every verse text of the project
                               for the LM (validation and test cells are left out); without it
                               the LM learns from the training verses

Keys of `transcribe`: model (an asr_model.tar or its folder), dataset, output_dir, device,
batch_seconds, chunk_seconds, stride_seconds, max_audio_seconds, precision,
decoder (auto | lm | greedy), beam_width, threads (see infer.Options).
"""
import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from ..events import EngineError

RECIPE_KEYS = ("learning_rate", "batch_size", "effective_batch", "warmup_steps", "mask_time_prob",
               "dropout", "layerdrop", "add_adapter")
# a small random model learns fast with a big step and no accumulation
TINY_RECIPE = dict(learning_rate=3e-3, batch_size=8, effective_batch=None, warmup_steps=10, mask_time_prob=0.0,
                   dropout=0.0, layerdrop=0.0, add_adapter=True)


@dataclass
class CTCConfig:
    RECIPES: ClassVar[dict[str, dict]] = {}
    ENGINE: ClassVar[str] = ""

    dataset: str = ""
    output_dir: str = ""
    device: str = "auto"
    seed: int = 1234
    # model
    base_model: str = ""
    base_checkpoint: str | None = None
    size: str = "default"
    architecture: str = "w2v2bert"
    language: str | None = None
    # recipe: None means the architecture's value from RECIPES
    learning_rate: float | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    effective_batch: int | None = None
    warmup_steps: int | None = None
    mask_time_prob: float | None = None
    dropout: float | None = None
    layerdrop: float | None = None
    add_adapter: bool | None = None
    # optimisation
    epochs: int = 10
    weight_decay: float = 0.0
    warmup_max_fraction: float = 0.1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    gradient_checkpointing: bool | None = None
    group_by_length: bool = True
    max_duration_s: float = 30.0
    threads: int | None = None
    num_workers: int | None = None
    # data
    val_split: float = 0.1
    test_split: float = 0.1
    min_char_count: int = 1
    text_normalization: dict = field(default_factory=lambda: {
        "lowercase": True, "remove_punctuation": True, "remove_numbers": False})
    # bookkeeping
    save_interval: int = 500
    keep_checkpoints: int = 2
    progress_every_steps: int = 10
    resume: str | None = None
    # after training
    transmorgrifier: dict = field(default_factory=lambda: {"enabled": True})
    lm: dict = field(default_factory=lambda: {"enabled": True, "order": 4})
    lm_corpus: str | None = None

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known and v is not None})
        # nested options merge over the defaults so a partial dict keeps the rest
        defaults = cls()
        for key in ("text_normalization", "transmorgrifier", "lm"):
            given = {k: v for k, v in (d.get(key) or {}).items() if v is not None}
            setattr(cfg, key, {**getattr(defaults, key), **given})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.dataset:
            raise EngineError("config: dataset is required")
        if not self.output_dir:
            raise EngineError("config: output_dir is required")
        for k in ("batch_size", "gradient_accumulation_steps", "effective_batch"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise EngineError(f"config: {k} must be >= 1")
        if self.epochs < 1:
            raise EngineError("config: epochs must be >= 1")
        if not (0 <= self.val_split < 1 and 0 <= self.test_split < 1 and self.val_split + self.test_split < 1):
            raise EngineError("config: val_split and test_split must be in [0, 1) and sum to less than 1")
        if self.size not in ("tiny", "default"):
            raise EngineError(f"config: size must be tiny or default, not {self.size!r}")
        if self.architecture not in ("w2v2bert", "wav2vec2"):
            raise EngineError(f"config: architecture must be w2v2bert or wav2vec2, not {self.architecture!r}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise EngineError(f"config: precision must be auto, fp32, fp16 or bf16, not {self.precision!r}")
        for k in ("mask_time_prob", "dropout", "layerdrop"):
            v = getattr(self, k)
            if v is not None and not 0 <= v < 1:
                raise EngineError(f"config: {k} must be in [0, 1)")
        order = self.lm.get("order", 4)
        if not isinstance(order, int) or not 2 <= order <= 6:
            raise EngineError("config: lm.order must be an integer from 2 to 6")

    def resolve(self, arch: str, world: int = 1) -> dict:
        """Fills the recipe keys a job left out; returns the values used."""
        recipe = TINY_RECIPE if self.size == "tiny" else self.RECIPES[arch]
        for k in RECIPE_KEYS:
            if getattr(self, k) is None:
                setattr(self, k, recipe[k])
        if self.gradient_accumulation_steps is None:
            want = self.effective_batch or self.batch_size * world
            self.gradient_accumulation_steps = max(1, math.ceil(want / (self.batch_size * world)))
        return {"architecture": arch, "learning_rate": self.learning_rate, "batch_size": self.batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "effective_batch": self.batch_size * self.gradient_accumulation_steps * world,
                "processes": world, "warmup_steps": self.warmup_steps, "mask_time_prob": self.mask_time_prob,
                "dropout": self.dropout, "layerdrop": self.layerdrop, "add_adapter": self.add_adapter,
                "epochs": self.epochs, "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm}

    def to_dict(self) -> dict:
        return asdict(self)
