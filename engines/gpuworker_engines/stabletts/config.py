"""One dataclass for the model and one for a training run."""
from dataclasses import MISSING, asdict, dataclass, field, fields

from ..events import EngineError


@dataclass
class ModelConfig:
    # mel front-end (published defaults: 44.1 kHz, n_fft 2048, hop 512, 128 slaney mels)
    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int = 2048
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    # text front-end
    add_blank: bool = True  # a blank between graphemes gives MAS room for transitions
    lowercase: bool = False
    # text encoder
    hidden: int = 256
    filter: int = 1024
    heads: int = 4
    encoder_layers: int = 3
    kernel_size: int = 3
    dropout: float = 0.1
    # mel style encoder -> speaker vector
    style_dim: int = 256
    style_slice_min: float = 1 / 12
    style_slice_max: float = 1 / 3
    # duration predictor
    dp_filter: int = 256
    dp_kernel: int = 3
    dp_dropout: float = 0.5
    # flow-matching decoder (DiT estimator with long skips)
    decoder_hidden: int = 256
    decoder_filter: int = 1024
    decoder_heads: int = 4
    decoder_layers: int = 6
    sigma_min: float = 1e-4
    cfg_dropout: float = 0.2  # probability of the learned "empty" speaker/content in training

    @classmethod
    def default(cls) -> "ModelConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """A model small enough to train in seconds on a CPU (16 kHz audio)."""
        return cls(sample_rate=16000, n_fft=512, hop_length=256, win_length=512, n_mels=40,
                   hidden=48, filter=96, heads=2, encoder_layers=1, style_dim=32,
                   dp_filter=48, decoder_hidden=64, decoder_filter=128, decoder_heads=2,
                   decoder_layers=2, dropout=0.0, dp_dropout=0.1)

    @classmethod
    def from_dict(cls, d: dict | None, base: "ModelConfig | None" = None) -> "ModelConfig":
        cfg = asdict(base or cls())
        cfg.update(_known(cls, d or {}, "model"))
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)


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
    save_interval: int = 100  # epochs between resumable checkpoints
    keep_checkpoints: int = 3
    progress_every_steps: int = 50
    size: str = "default"  # tiny | default
    model: dict = field(default_factory=dict)
    resume: str | None = None
    base_checkpoint: str | None = None
    max_duration: float = 20.0  # seconds; longer items are skipped (memory)
    stop_at_step: int | None = None  # stop (with a resumable checkpoint) at this optimizer step
    bucket_size: int = 32  # batches per length bucket when shuffling

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        cfg = cls(**_known(cls, d, "train"))
        if cfg.size not in ("tiny", "default"):
            raise EngineError(f"config: size must be \"tiny\" or \"default\", not {cfg.size!r}")
        if cfg.device not in ("auto", "cpu", "cuda"):
            raise EngineError(f"config: device must be auto, cpu or cuda, not {cfg.device!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "save_interval"):
            if getattr(cfg, name) < 1:
                raise EngineError(f"config: {name} must be at least 1")
        if not 0 <= cfg.val_split < 1:
            raise EngineError("config: val_split must be in [0, 1)")
        if not cfg.dataset or not cfg.output_dir:
            raise EngineError("config: dataset and output_dir are required")
        return cfg

    def model_config(self) -> ModelConfig:
        base = ModelConfig.tiny() if self.size == "tiny" else ModelConfig.default()
        return ModelConfig.from_dict(self.model, base)


def _known(cls, d: dict, what: str) -> dict:
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
