"""Model files.

An inference model (best_model.pt, final_model.pt, or the published
checkpoint_0.pt) is a bare state_dict in the published layout. What the weights
do not say (model and mel config, front-end and symbols, size, history) sits in
a sidecar JSON of the same stem (best_model.json). A file without one is the
published StableTTS v1.1. Resumable checkpoints are our own dict: weights, the
sidecar's content and the training state (optimizer state, counters, RNG states
as tensors, the train config as plain values).

KdaiP's own tools read a folder of `checkpoint_<epoch>.pt` files: its
utils/load.py `continue_training` parses every `*.pt` of the folder as
`<name>_<epoch>.pt` and fails on `best_model.pt` ("model" is not a number). So
training also leaves `kdaip/checkpoint_<best epoch>.pt`, a hard link to
best_model.pt (same bytes, one Git LFS object): KdaiP's train.py continues from
that folder. The sidecar gives KdaiP's constructor arguments (kdaip_constructor)
and mel settings (kdaip_mel_config), which its api.py assumes to be the
published ones.

Every one of these files may come from a project, so each is read as data only
(untrusted.py): torch.load with weights_only=True, sidecars with a size cap. A
file that would run code when loaded is refused with its path in the message.
"""
import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field

from .. import checkpoint, hub, untrusted
from ..events import EngineError
from .config import ModelConfig
from .frontend import FrontEnd
from .model import StableTTS

META_FORMAT = "gpuworker-stabletts-meta/1"
RESUMABLE_FORMAT = "gpuworker-stabletts-resumable/1"
BASE_SETTING = "--tts-base-model (env GPU_WORKER_TTS_BASE_MODEL)"


@dataclass
class Meta:
    config: ModelConfig = field(default_factory=ModelConfig.published)
    frontend: FrontEnd = field(default_factory=lambda: FrontEnd("ipa"))
    size: str = "default"
    origin: str = "published"  # what its training started from: published | fine-tuned | scratch
    info: dict = field(default_factory=dict)  # epoch, step, val_loss, ...
    published: bool = True  # no sidecar: the published checkpoint itself

    def to_dict(self) -> dict:
        return {"format": META_FORMAT, "model_config": self.config.to_dict(),
                "frontend": self.frontend.to_dict(), "n_vocab": len(self.frontend),
                "size": self.size, "origin": self.origin,
                "kdaip_constructor": kdaip_constructor(self.config, len(self.frontend)),
                "kdaip_mel_config": kdaip_mel_config(self.config), **self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Meta":
        if d.get("format") != META_FORMAT:
            raise ValueError(f"format {d.get('format')!r}, want {META_FORMAT}")
        info = {k: v for k, v in d.items() if k not in DERIVED}
        return cls(ModelConfig.from_dict(d["model_config"]), FrontEnd.from_dict(d["frontend"]),
                   d.get("size", "default"), d.get("origin", "fine-tuned"), info, published=False)


DERIVED = ("format", "model_config", "frontend", "n_vocab", "size", "origin",
           "kdaip_constructor", "kdaip_mel_config")
KDAIP_FOLDER = "kdaip"


def kdaip_constructor(cfg: ModelConfig, n_vocab: int) -> dict:
    """Keyword arguments of KdaiP's models.model.StableTTS for this model."""
    return {"n_vocab": n_vocab, "mel_channels": cfg.n_mels, "hidden_channels": cfg.hidden_channels,
            "filter_channels": cfg.filter_channels, "n_heads": cfg.n_heads,
            "n_enc_layers": cfg.n_enc_layers, "n_dec_layers": cfg.n_dec_layers,
            "kernel_size": cfg.kernel_size, "p_dropout": cfg.p_dropout,
            "gin_channels": cfg.gin_channels}


def kdaip_mel_config(cfg: ModelConfig) -> dict:
    """Keyword arguments of KdaiP's config.MelConfig / utils.audio.LogMelSpectrogram."""
    return {"sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "win_length": cfg.win_length,
            "hop_length": cfg.hop_length, "f_min": cfg.f_min, "f_max": cfg.f_max,
            "pad": (cfg.n_fft - cfg.hop_length) // 2, "n_mels": cfg.n_mels, "center": False,
            "pad_mode": "reflect", "mel_scale": "slaney"}


def link_kdaip_name(model_path: str, epoch: int) -> str:
    """<folder of model_path>/kdaip/checkpoint_<epoch>.pt as a hard link to model_path (a
    copy where links are not possible), the only .pt file of that folder, so KdaiP's
    continue_training loads it; returns its path."""
    folder = os.path.join(os.path.dirname(os.path.abspath(model_path)), KDAIP_FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"checkpoint_{int(epoch)}.pt")
    tmp = path + ".tmp"  # not *.pt: never taken for a checkpoint
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(model_path, tmp)
    except OSError:
        shutil.copyfile(model_path, tmp)
    os.replace(tmp, path)
    for name in os.listdir(folder):  # an earlier best
        if name.endswith(".pt") and name != os.path.basename(path):
            os.remove(os.path.join(folder, name))
    return path


def kdaip_name(model_path: str) -> str | None:
    """The kdaip/checkpoint_<epoch>.pt beside model_path, if there is one."""
    folder = os.path.join(os.path.dirname(os.path.abspath(model_path)), KDAIP_FOLDER)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".pt")) if os.path.isdir(folder) else []
    return os.path.join(folder, names[0]) if names else None


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def resolve(ref: str) -> str:
    """A model file's local path, its sidecar beside it (hub.local_file)."""
    return hub.local_file(ref, "model file", sidecar=True)


def read_meta(path: str) -> Meta:
    """The sidecar's content; the published model's when there is none (a JSON file of
    another format beside the weights is not a sidecar)."""
    side = sidecar_path(path)
    if not os.path.exists(side):
        return Meta()
    d = untrusted.read_json(side)
    if not isinstance(d, dict) or d.get("format") != META_FORMAT:
        return Meta()
    try:
        return Meta.from_dict(d)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise EngineError(f"{side}: not a sidecar of this engine: {type(e).__name__}: {e}") from None


def load_model(ref: str, device="cpu") -> tuple[StableTTS, Meta]:
    """A bare state_dict (with its sidecar, if any) -> (model in eval mode, meta); strict."""
    path = resolve(ref)
    meta = read_meta(path)
    sd = untrusted.load_tensors(path, ref if path == ref else f"{ref} ({path})")
    if not isinstance(sd, dict) or "encoder.emb.weight" not in sd:
        what = "a resumable checkpoint, not a model" if isinstance(sd, dict) and \
            sd.get("format") == RESUMABLE_FORMAT else "not a StableTTS state_dict"
        raise EngineError(f"{ref} is {what}")
    model = StableTTS(meta.config, len(meta.frontend))
    mismatch = layout_mismatch(model.state_dict(), sd)
    if mismatch:
        read_as = (f"has no sidecar (a {os.path.basename(sidecar_path(path))} of this engine), so "
                   "it is read as the published StableTTS v1.1 (401 symbols)" if meta.published
                   else f"does not fit the model its sidecar {sidecar_path(path)} describes")
        raise EngineError(f"{ref} {read_as}: {mismatch}")
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval(), meta


def layout_mismatch(want: dict, got: dict) -> str:
    """'' when got has exactly want's tensor names and shapes, else what differs."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [k for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing (first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (first {k}: {list(got[k].shape)}, "
                     f"expected {list(want[k].shape)})")
    return "; ".join(parts)


def bare_state_dict(model: StableTTS) -> OrderedDict:
    return OrderedDict((k, v.detach().to("cpu", copy=True).contiguous())
                       for k, v in model.state_dict().items())


def write_sidecar(meta: Meta, path: str) -> str:
    side = sidecar_path(path)
    with checkpoint.atomic_open(side) as f:
        f.write(json.dumps(meta.to_dict(), ensure_ascii=False, indent=1).encode("utf-8"))
    return side


def save_model(model: StableTTS, meta: Meta, path: str) -> str:
    """Writes the sidecar, then the state_dict, each atomically; returns the sidecar path."""
    side = write_sidecar(meta, path)
    checkpoint.save_atomic(bare_state_dict(model), path)
    return side


def save_resumable(path: str, model: StableTTS, meta: Meta, **state) -> None:
    checkpoint.save_atomic({"format": RESUMABLE_FORMAT, "model": bare_state_dict(model),
                            "meta": meta.to_dict(), **state}, path)


def read_resumable(path: str) -> tuple[dict, StableTTS, Meta]:
    """Our resumable checkpoint; one that is unreadable, refused or of another kind fails
    the job with its path (delete the file to train from the start)."""
    if not path or not os.path.isfile(path):
        raise EngineError(f"resumable checkpoint not found: {path}")
    state = untrusted.load_tensors(path)
    if not isinstance(state, dict) or state.get("format") != RESUMABLE_FORMAT:
        raise EngineError(f"{path}: not a resumable checkpoint of this engine")
    with checkpoint.blamed(path):
        meta = Meta.from_dict(state["meta"])
        model = StableTTS(meta.config, len(meta.frontend))
        model.load_state_dict(state["model"], strict=True)
    return state, model, meta
