"""The settings every CTC engine shares, and how a recipe fills the ones a job leaves out.

`train` (CTCConfig, with each engine's RECIPES as presets) and `transcribe`
(TranscribeConfig); each key's default, unit and meaning are declared once, below.
A recipe key (RECIPE_KEYS) left out or null takes the value of the preset
"size=tiny", else of "architecture=<the base's architecture>".
"""
import math
from dataclasses import dataclass
from typing import ClassVar

from ..config import FileCaps, Settings, device_knob, knob, path_knob
from ..events import EngineError

RECIPE_KEYS = ("learning_rate", "batch_size", "effective_batch", "warmup_steps", "mask_time_prob",
               "dropout", "layerdrop", "add_adapter")
# a small random model learns fast with a big step and no accumulation
TINY_RECIPE = dict(learning_rate=3e-3, batch_size=8, effective_batch=None, warmup_steps=10, mask_time_prob=0.0,
                   dropout=0.0, layerdrop=0.0, add_adapter=True)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(kw_only=True)
class TextNormalization(Settings):
    """How verse text is normalised for training, the language model and scoring."""
    lowercase: bool = knob(True, help="lower-case the text (casing is not heard)")
    remove_punctuation: bool = knob(True, help="drop punctuation (it is not heard)")
    remove_numbers: bool = knob(False, help="drop digits")


@dataclass(kw_only=True)
class LanguageModel(Settings):
    """The n-gram language model built after training; kept only when it lowers validation CER."""
    enabled: bool = knob(True, help="build it")
    order: int = knob(4, min=2, max=6, help="n-gram order")
    alpha: float | None = knob(None, help="language model weight (null: tuned on validation)")
    beta: float | None = knob(None, help="word insertion bonus (null: tuned on validation)")
    beam_width: int = knob(64, min=1, help="beams of the decoder")


@dataclass(kw_only=True)
class Transmorgrifier(Settings):
    """The SentenceTransmorgrifier post-corrector; kept only when it lowers validation CER."""
    enabled: bool = knob(True, help="train it on the model's errors")
    iterations: int = knob(1000, min=1, help="iteration cap per catboost model")
    early_stopping_rounds: int = knob(50, min=1, help="on the validation pairs")
    device: str = knob("auto", choices=("auto", "cpu", "gpu"),
                       help="auto: the GPU when catboost sees one")
    context: int = knob(7, min=1, help="letters of context each side")
    learning_rate: float = knob(0.1, min=0.0, help="catboost learning rate")
    threads: int | None = knob(None, min=1, help="catboost threads (null: catboost's choice)")
    catboost: dict | None = knob(None, help="extra CatBoostClassifier parameters (benchmarks, experts)")


@dataclass(kw_only=True)
class CTCConfig(FileCaps):
    """Fine-tunes a CTC model, then adds a language model and post-correction and packs the artifact.

    Multi-process runs (torchrun) keep the recipe: see training.py.
    """
    RECIPES: ClassVar[dict[str, dict]] = {}
    ENGINE: ClassVar[str] = ""

    dataset: str = path_knob("the dataset folder: index.jsonl and the recordings it names", required=True)
    output_dir: str = path_knob("where the model, checkpoints and metrics are written", required=True)
    device: str = device_knob()
    seed: int = knob(1234, help="seeds the split, the model's new weights and every step's random draws")
    # model
    base_model: str = knob("", help="hub id or local folder of the model to fine-tune")
    base_checkpoint: str | None = path_knob("an earlier job's artifact (or its unpacked folder) to continue "
                                        "from; its vocabulary is extended with new letters")
    size: str = knob("default", choices=("default", "tiny"),
                     help="tiny: a small random model built in code (tests, demos)")
    architecture: str = knob("w2v2bert", choices=("w2v2bert", "wav2vec2"),
                             help="the tiny model's (for other sizes the base decides)")
    language: str | None = knob(None, help="ISO 639-3 code, for the model card")
    # the recipe: null takes the preset's value
    learning_rate: float | None = knob(None, min=0.0, help="peak learning rate (null: the recipe's)")
    batch_size: int | None = knob(None, unit="items", min=1,
                                  help="items per micro-batch, per process (null: the recipe's)")
    gradient_accumulation_steps: int | None = knob(
        None, min=1, help="micro-batches per optimizer step, over all processes (null: enough to make "
                          "up effective_batch, rounded up)")
    effective_batch: int | None = knob(None, unit="items", min=1,
                                       help="items per optimizer step when gradient_accumulation_steps "
                                            "is null (null: the recipe's; no recipe: batch_size)")
    warmup_steps: int | None = knob(None, unit="steps", min=0,
                                    help="linear warmup (0: none; null: the recipe's)")
    mask_time_prob: float | None = knob(None, unit="ratio", help="SpecAugment time masking (null: the recipe's)")
    dropout: float | None = knob(None, unit="ratio", help="dropout of the encoder (null: the recipe's)")
    layerdrop: float | None = knob(None, unit="ratio", help="share of layers skipped (null: the recipe's)")
    add_adapter: bool | None = knob(None, help="an adapter on top of the encoder (null: the recipe's)")
    # optimisation
    epochs: int = knob(10, unit="epochs", min=1, help="passes over the training items")
    weight_decay: float = knob(0.0, min=0.0, help="AdamW weight decay")
    warmup_max_fraction: float = knob(0.1, unit="ratio", min=0.0, max=1.0,
                                      help="the warmup never exceeds this share of all steps")
    max_grad_norm: float = knob(1.0, min=0.0, help="largest gradient norm of an optimizer step")
    precision: str = knob("auto", choices=PRECISIONS, help="auto: bf16, else fp16, on CUDA; fp32 on CPU")
    gradient_checkpointing: bool | None = knob(None, help="recompute activations (null: on for CUDA)")
    group_by_length: bool = knob(True, help="batches of similar durations (little padding)")
    max_duration_s: float = knob(30.0, unit="seconds", min=0.0, help="longer training clips are left out")
    threads: int | None = knob(None, min=1, help="torch CPU threads (null: torch's choice)")
    num_workers: int | None = knob(None, min=0, help="data loader processes (null: 4 on CUDA, else 0)")
    # data
    val_split: float = knob(0.1, unit="ratio", min=0.0,
                            help="share held out to choose the model; from 4 items on each non-zero "
                                 "split gets at least one item, below 4 all items train")
    test_split: float = knob(0.1, unit="ratio", min=0.0, help="share held out for the report only")
    min_char_count: int = knob(1, unit="items", min=1, help="rarer characters become the unknown token")
    text_normalization: TextNormalization = knob(TextNormalization, help=TextNormalization.__doc__)
    # bookkeeping
    save_every_steps: int = knob(500, unit="steps", min=1, help="optimizer steps between checkpoints")
    keep_checkpoints: int = knob(2, unit="items", min=1, help="checkpoints of each kind kept on disk")
    progress_every_steps: int = knob(10, unit="steps", min=1,
                                     help="steps between progress events (every step is logged)")
    resume: str | None = path_knob("a resumable (full) or portable checkpoint to continue (also --resume)")
    # after training
    transmorgrifier: Transmorgrifier = knob(Transmorgrifier, help=Transmorgrifier.__doc__)
    lm: LanguageModel = knob(LanguageModel, help=LanguageModel.__doc__)
    lm_corpus: str | None = path_knob('JSON lines {"cell_id", "text"}: every verse text of the project for '
                                  "the language model (held-out cells are left out); without it the "
                                  "model learns from the training verses")

    @classmethod
    def presets(cls) -> dict[str, dict]:
        tiny = {**TINY_RECIPE, "transmorgrifier": {"iterations": 30}}  # minutes, not hours
        return {"size=tiny": tiny, **{f"architecture={a}": r for a, r in cls.RECIPES.items()}}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.PRESETS = cls.presets()
        cls.NAME = f"{cls.ENGINE} train"

    def settle(self) -> None:
        self.preset("size")

    def validate(self) -> None:
        if self.val_split + self.test_split >= 1:
            raise EngineError("config: val_split and test_split must sum to less than 1")
        for k in ("mask_time_prob", "dropout", "layerdrop"):
            v = getattr(self, k)
            if v is not None and not 0 <= v < 1:
                raise EngineError(f"config: {k} must be in [0, 1)")

    def resolve(self, arch: str) -> dict:
        """Fills the recipe keys a job left out from the base's architecture; returns the
        values used. gradient_accumulation_steps is then the job's, over all processes."""
        self.preset("architecture", arch)
        if self.gradient_accumulation_steps is None:
            want = self.effective_batch or self.batch_size
            self.gradient_accumulation_steps = max(1, math.ceil(want / self.batch_size))
        return {"architecture": arch, "learning_rate": self.learning_rate, "batch_size": self.batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "warmup_steps": self.warmup_steps, "mask_time_prob": self.mask_time_prob,
                "dropout": self.dropout, "layerdrop": self.layerdrop, "add_adapter": self.add_adapter,
                "epochs": self.epochs, "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm}


@dataclass(kw_only=True)
class Inference(Settings):
    """How clips become CTC log-probabilities (see infer.py)."""
    batch_seconds: float = knob(240.0, unit="seconds", help="padded audio per forward pass")
    chunk_seconds: float = knob(30.0, unit="seconds", help="longer clips are cut into windows of this length")
    stride_seconds: float = knob(5.0, unit="seconds", min=0.0,
                                 help="context each window borrows from its neighbours, per side")
    max_audio_seconds: float = knob(600.0, unit="seconds", help="longer clips are skipped with a warning")
    precision: str = knob("auto", choices=PRECISIONS, help="auto: bf16 (fp16 where bf16 is missing) "
                                                           "on CUDA, fp32 on CPU")

    def validate(self) -> None:
        if self.chunk_seconds <= 2 * self.stride_seconds:
            raise EngineError("config: chunk_seconds must be more than twice stride_seconds")
        if self.batch_seconds <= 0 or self.max_audio_seconds <= 0:
            raise EngineError("config: batch_seconds and max_audio_seconds must be positive")


@dataclass(kw_only=True)
class TranscribeConfig(Inference, FileCaps):
    """Transcribes every dataset item with audio (its text is ignored), one `item` event each."""
    ENGINE: ClassVar[str] = ""

    model: str = path_knob("the ASR artifact (asr_model.tar, a zip, or its unpacked folder)", required=True)
    dataset: str = path_knob("a dataset folder whose items have audio", required=True)
    device: str = device_knob()
    decoder: str = knob("auto", choices=("auto", "lm", "greedy"),
                        help="auto: the artifact's language model when it has one, else greedy")
    beam_width: int = knob(64, min=1, help="beams of the language-model decoder")
    threads: int | None = knob(None, min=1, help="torch CPU threads (null: torch's choice)")

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.NAME = f"{cls.ENGINE} transcribe"
