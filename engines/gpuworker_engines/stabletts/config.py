"""The model's one config dataclass, and the settings of each command.

Config keys the engine reads (JSON file given with --config; null means default):

train
    dataset, output_dir (required); device auto|cpu|cuda; size default|tiny;
    epochs, batch_size, gradient_accumulation_steps, learning_rate, warmup_steps,
    min_lr_ratio, weight_decay, grad_clip, val_split, seed, save_interval (epochs
    between resumable checkpoints), keep_checkpoints, progress_every_steps,
    max_duration (s), stop_at_step;
    resume (a resumable checkpoint; also --resume);
    base_checkpoint: a published state_dict (checkpoint_0.pt), our best_model.pt /
        final_model.pt (sidecar JSON beside it), or hf://<owner>/<repo>/<path>;
    from_scratch (bool): train without a base (always allowed for size tiny);
    frontend auto|ipa|uroman|graphemes (auto: uroman when most letters of the
        data are non-Latin, else ipa; a graphemes base stays graphemes);
    model: {field: value} overrides of ModelConfig for a model trained from
        scratch (a fine-tune takes the architecture of its base and only its
        dropout fields).
synthesize
    checkpoint, dataset (text-only index), output_dir (required), voice_reference
    (wav), device, steps (10), temperature (1), cfg_scale (3), length_scale (1),
    solver euler|midpoint|dopri5 (euler), vocoder (a vocos.pt; required unless the
    model is size tiny, which falls back to Griffin-Lim), batch_size, seed,
    frontend (ipa|uroman|auto overrides the checkpoint's when they share symbols).
evaluate
    as synthesize, plus split_file (split.json written by train; default: the
    one beside the checkpoint), split (val), max_items (0 = all), write_audio.
check
    vocoder, base_checkpoint, device: each given file is loaded strictly.
"""
from dataclasses import MISSING, asdict, dataclass, field, fields

from ..events import EngineError


@dataclass
class ModelConfig:
    """Defaults are the published StableTTS v1.1 (31.6 M parameters with 401 symbols)."""
    # log-mel front-end
    sample_rate: int = 44100
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    # network
    hidden_channels: int = 256
    filter_channels: int = 1024
    n_heads: int = 4
    n_enc_layers: int = 3
    n_dec_layers: int = 6
    kernel_size: int = 3
    gin_channels: int = 256  # speaker vector; equal to hidden_channels as published
    # regularisation and flow matching (not structure: a fine-tune may change these)
    p_dropout: float = 0.1
    style_dropout: float = 0.25
    dp_dropout: float = 0.5
    cfg_dropout: float = 0.2  # share of training items that learn the unconditional velocity
    sigma_min: float = 1e-4

    @classmethod
    def published(cls) -> "ModelConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """Trains in seconds on a CPU: 16 kHz audio, 40 mels, narrow and shallow."""
        return cls(sample_rate=16000, n_fft=512, win_length=512, hop_length=256, n_mels=40,
                   hidden_channels=64, filter_channels=128, n_heads=2, n_enc_layers=2,
                   n_dec_layers=2, gin_channels=64, p_dropout=0.0, style_dropout=0.0,
                   dp_dropout=0.1)

    @classmethod
    def from_dict(cls, d: dict | None, base: "ModelConfig | None" = None) -> "ModelConfig":
        cfg = asdict(base or cls())
        cfg.update(known_keys(cls, d or {}, "model"))
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)


TUNABLE = ("p_dropout", "style_dropout", "dp_dropout", "cfg_dropout")
FRONTENDS = ("auto", "ipa", "uroman", "graphemes")


@dataclass
class TrainConfig:
    dataset: str = ""
    output_dir: str = ""
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 1234
    epochs: int = 100
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    min_lr_ratio: float = 0.1  # the cosine ends at learning_rate * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_split: float = 0.1
    save_interval: int = 100
    keep_checkpoints: int = 3
    progress_every_steps: int = 50
    size: str = "default"  # tiny | default
    model: dict = field(default_factory=dict)
    resume: str | None = None
    base_checkpoint: str | None = None
    from_scratch: bool = False
    frontend: str = "auto"
    max_duration: float = 20.0  # seconds; longer items are skipped (memory)
    stop_at_step: int | None = None  # stop (with a resumable checkpoint) at this optimizer step
    bucket_size: int = 32  # batches per length bucket when shuffling

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        cfg = cls(**known_keys(cls, d, "train"))
        if cfg.size not in ("tiny", "default"):
            raise EngineError(f"config: size must be \"tiny\" or \"default\", not {cfg.size!r}")
        if cfg.device not in ("auto", "cpu", "cuda"):
            raise EngineError(f"config: device must be auto, cpu or cuda, not {cfg.device!r}")
        if cfg.frontend not in FRONTENDS:
            raise EngineError(f"config: frontend must be one of {', '.join(FRONTENDS)}, "
                              f"not {cfg.frontend!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "save_interval"):
            if getattr(cfg, name) < 1:
                raise EngineError(f"config: {name} must be at least 1")
        if not 0 <= cfg.val_split < 1:
            raise EngineError("config: val_split must be in [0, 1)")
        if not cfg.dataset or not cfg.output_dir:
            raise EngineError("config: dataset and output_dir are required")
        return cfg

    def model_config(self) -> ModelConfig:
        base = ModelConfig.tiny() if self.size == "tiny" else ModelConfig.published()
        return ModelConfig.from_dict(self.model, base)


def known_keys(cls, d: dict, what: str) -> dict:
    """Keeps the keys the dataclass knows (unknown ones are ignored), with checked types."""
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        default = f.default_factory() if f.default is MISSING else f.default
        if v is None:
            if default is None:
                out[f.name] = None
            continue  # null means "use the default"
        try:
            if isinstance(default, bool) or f.type is bool:
                if not isinstance(v, bool):
                    raise TypeError
            elif isinstance(default, int) or f.type in (int, int | None):
                if isinstance(v, bool) or float(v) != int(v):
                    raise TypeError
                v = int(v)
            elif isinstance(default, float) or f.type in (float, float | None):
                if isinstance(v, bool):
                    raise TypeError
                v = float(v)
            elif isinstance(default, dict) and not isinstance(v, dict):
                raise TypeError
            elif isinstance(default, str) and not isinstance(v, str):
                raise TypeError
            elif f.type == (str | None) and not isinstance(v, str):
                raise TypeError
        except (TypeError, ValueError):
            raise EngineError(f"config: {what} key {f.name!r} has a wrong type: {v!r}") from None
        out[f.name] = v
    return out
