"""One dataclass holding every training knob, with the fine-tuning recipe's defaults."""
from dataclasses import asdict, dataclass, field, fields

from ..events import EngineError


@dataclass
class TrainConfig:
    dataset: str = ""
    output_dir: str = ""
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 1234
    # model
    base_model: str = "facebook/w2v-bert-2.0"  # hub id or local folder
    size: str = "default"  # "tiny": random model built in code (tests, demo)
    architecture: str = "w2v2bert"  # only for size tiny; otherwise the base's model_type decides
    add_adapter: bool = True
    dropout: float = 0.0  # hidden, attention, activation, projection, final, layerdrop
    mask_time_prob: float = 0.0
    # optimisation
    epochs: int = 10
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    warmup_max_fraction: float = 0.1  # warmup never exceeds this share of all steps
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16
    gradient_checkpointing: bool | None = None  # None: on for GPU
    group_by_length: bool = True
    max_duration_s: float = 30.0  # longer clips are skipped with a warning
    threads: int | None = None  # torch CPU threads; None: torch's default
    num_workers: int | None = None  # data-loading processes; None: 4 on GPU, 0 on CPU
    # data
    val_split: float = 0.1
    min_char_count: int = 1  # characters seen fewer times become [UNK]
    text_normalization: dict = field(default_factory=lambda: {
        "lowercase": True, "remove_punctuation": True, "remove_numbers": False})
    # bookkeeping
    save_interval: int = 500  # steps between resumable checkpoints
    keep_checkpoints: int = 3
    progress_every_steps: int = 10
    resume: str | None = None
    base_checkpoint: str | None = None  # alias of base_model when set
    # post-correction
    transmorgrifier: dict = field(default_factory=lambda: {
        "enabled": True, "iterations": 4000, "device": "cpu", "context": 7})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known and v is not None})
        # nested options merge over the defaults so a partial dict keeps the rest
        defaults = cls()
        cfg.text_normalization = {**defaults.text_normalization, **(d.get("text_normalization") or {})}
        cfg.transmorgrifier = {**defaults.transmorgrifier, **(d.get("transmorgrifier") or {})}
        if cfg.base_checkpoint:
            cfg.base_model = cfg.base_checkpoint
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.dataset:
            raise EngineError("config: dataset is required")
        if not self.output_dir:
            raise EngineError("config: output_dir is required")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1 or self.epochs < 1:
            raise EngineError("config: batch_size, gradient_accumulation_steps and epochs must be >= 1")
        if not 0 <= self.val_split < 1:
            raise EngineError("config: val_split must be in [0, 1)")
        if self.size not in ("tiny", "default"):
            raise EngineError(f"config: size must be tiny or default, not {self.size!r}")
        if self.architecture not in ("w2v2bert", "wav2vec2"):
            raise EngineError(f"config: architecture must be w2v2bert or wav2vec2, not {self.architecture!r}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise EngineError(f"config: precision must be auto, fp32, fp16 or bf16, not {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)
