"""The model's one config dataclass (ModelConfig), and the settings of each command:
TrainConfig, SynthesizeConfig, EvaluateConfig, CheckConfig. Each key's default, unit and
meaning are declared once, below; `python -m gpuworker_engines schema` prints them.
"""
from dataclasses import asdict, dataclass

from ..config import FileCaps, Settings, device_knob, knob, known_values, path_knob
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
        cfg.update(known_values(cls, d or {}, "model"))
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)


TUNABLE = ("p_dropout", "style_dropout", "dp_dropout", "cfg_dropout")
FRONTENDS = ("auto", "ipa", "uroman", "graphemes")


@dataclass(kw_only=True)
class TrainConfig(FileCaps):
    """Fine-tunes a base model (or trains from scratch) on a dataset folder, with exact resume.

    Multi-process runs (torchrun) keep the recipe: see training.py.
    """
    NAME = "stabletts train"
    PRESETS = {"size=tiny": {"learning_rate": 2e-3, "warmup_steps": 10}}

    dataset: str = path_knob("the dataset folder: index.jsonl and the recordings it names", required=True)
    output_dir: str = path_knob("where models, checkpoints and metrics are written", required=True)
    device: str = device_knob()
    seed: int = knob(1234, help="seeds the split, the batch order and every step's random draws")
    size: str = knob("default", choices=("default", "tiny"),
                     help="default: the published architecture, fine-tuned from a base; "
                          "tiny: a small model trained from scratch in seconds (tests, demos)")
    epochs: int = knob(1000, unit="epochs", min=1, help="passes over the training items")
    batch_size: int = knob(8, unit="items", min=1, help="items per micro-batch (per process)")
    gradient_accumulation_steps: int = knob(
        1, min=1, help="micro-batches per optimizer step, over all processes: the effective batch "
                       "is batch_size x this on any number of processes")
    learning_rate: float = knob(1e-4, min=0.0, help="peak learning rate, after the warmup")
    min_lr_ratio: float = knob(0.1, unit="ratio", min=0.0, max=1.0,
                               help="the cosine decay ends at learning_rate x this")
    warmup_steps: int = knob(200, unit="steps", min=0,
                             help="linear warmup from 0 to learning_rate (0: none)")
    weight_decay: float = knob(0.01, min=0.0, help="AdamW weight decay")
    grad_clip: float = knob(1.0, min=0.0, help="largest gradient norm of an optimizer step")
    val_split: float = knob(0.1, unit="ratio", min=0.0, max=0.99,
                            help="share of items held out to choose the best model")
    save_every_epochs: int = knob(100, unit="epochs", min=1,
                                  help="epochs between resumable checkpoints")
    keep_checkpoints: int = knob(3, unit="items", min=1, help="resumable checkpoints kept on disk")
    progress_every_steps: int = knob(50, unit="steps", min=1,
                                     help="steps between progress events (every step is logged)")
    max_duration: float = knob(20.0, unit="seconds", min=0.0,
                               help="longer items are left out (memory)")
    stop_at_step: int | None = knob(None, unit="steps", min=1,
                                    help="stop, with a resumable checkpoint, at this optimizer step")
    bucket_size: int = knob(32, unit="items", min=1,
                            help="batches per length bucket when shuffling (little padding)")
    model: dict = knob({}, help="ModelConfig fields for a model trained from scratch; a "
                                "fine-tune takes its base's architecture and only the dropouts "
                                f"({', '.join(TUNABLE)})")
    resume: str | None = path_knob("a resumable checkpoint to continue (also --resume)")
    base_checkpoint: str | None = path_knob(
        "the model to fine-tune: the published checkpoint_0.pt, an earlier job's best_model.pt "
        "or final_model.pt (with its JSON sidecar), or hf://<owner>/<repo>/<path>")
    from_scratch: bool = knob(False, help="train from random weights without a base "
                                          "(always so for size tiny without a base)")
    frontend: str = knob("auto", choices=FRONTENDS,
                         help="text to symbols: auto takes uroman when most letters of the data are "
                              "non-Latin, else ipa; a graphemes base stays graphemes")

    def settle(self) -> None:
        self.preset("size")

    def validate(self) -> None:
        unknown = sorted(set(self.model) - set(ModelConfig.__dataclass_fields__))
        if unknown:
            raise EngineError(f"config: unknown model key(s): {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(ModelConfig.__dataclass_fields__)})")

    def model_config(self) -> ModelConfig:
        base = ModelConfig.tiny() if self.size == "tiny" else ModelConfig.published()
        return ModelConfig.from_dict(self.model, base)


@dataclass(kw_only=True)
class SynthesizeConfig(FileCaps):
    """Speaks every text of a dataset in the voice of one reference recording, one WAV per item."""
    NAME = "stabletts synthesize"
    # size: the model's (from its checkpoint)
    PRESETS = {"size=tiny": {"solver": "euler"}}

    checkpoint: str = path_knob("the model: best_model.pt or final_model.pt of a training job",
                            required=True)
    dataset: str = path_knob("a dataset folder whose items have text", required=True)
    output_dir: str = path_knob("where the WAVs are written", required=True)
    voice_reference: str = path_knob("a recording (WAV) of the voice to speak in", required=True)
    device: str = device_knob()
    steps: int = knob(10, min=1, help="output steps of the flow-matching ODE")
    temperature: float = knob(1.0, min=0.0, help="scale of the initial noise")
    cfg_scale: float = knob(3.0, min=0.0, help="classifier-free guidance scale")
    length_scale: float = knob(1.0, min=0.01, help="speaking-rate factor (> 1 is slower)")
    solver: str = knob("dopri5", choices=("euler", "midpoint", "dopri5"),
                       help="ODE solver: dopri5 as the published inference, euler for a tiny model")
    vocoder: str | None = path_knob("the published vocos.pt; a tiny model without one speaks "
                                "through Griffin-Lim")
    batch_size: int = knob(8, unit="items", min=1, help="texts synthesized together")
    seed: int = knob(1234, help="seeds the noise")
    frontend: str | None = knob(None, choices=FRONTENDS,
                                help="the model's own when null; ipa, uroman or auto instead "
                                     "for a model that reads the published symbols")


@dataclass(kw_only=True)
class EvaluateConfig(SynthesizeConfig):
    """Mel-cepstral distortion of synthesis against the recordings of held-out items."""
    NAME = "stabletts evaluate"

    voice_reference: str | None = path_knob("one recording for every item; null: each item's own")
    split_file: str | None = path_knob("split.json written by train; null: the one beside the "
                                   "checkpoint (without one every item is scored)")
    # Held-out scoring of every training run: the fixed-step solver keeps it a small
    # share of a job and its figures comparable from run to run.
    solver: str = knob("euler", choices=("euler", "midpoint", "dopri5"),
                       help="ODE solver of the scored synthesis (euler: cheap and repeatable)")
    split: str = knob("val", choices=("val", "train"), help="which items of the split to score")
    max_items: int = knob(0, unit="items", min=0, help="score at most this many (0: all)")
    write_audio: bool = knob(True, help="also write each item's WAV (through the vocoder)")


@dataclass(kw_only=True)
class CheckConfig(FileCaps):
    """Loads each configured file strictly (gpu-worker doctor)."""
    NAME = "stabletts check"

    vocoder: str | None = path_knob("a vocos.pt to load")
    base_checkpoint: str | None = path_knob("a base model to load")
    device: str = device_knob()


CONFIGS: dict[str, type[Settings]] = {"train": TrainConfig, "synthesize": SynthesizeConfig,
                                      "evaluate": EvaluateConfig, "check": CheckConfig}
