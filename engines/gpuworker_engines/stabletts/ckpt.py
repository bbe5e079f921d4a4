"""Model files.

An inference model (best_model.pt, final_model.pt, or the published
checkpoint_0.pt) is a bare state_dict in the published layout. What the weights
do not say (model and mel config, front-end and symbols, size, history) sits in
a sidecar JSON of the same stem (best_model.json). A file without one is the
published StableTTS v1.1. Resumable checkpoints are our own dict: weights, the
sidecar's content and the training state.
"""
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .. import checkpoint
from ..events import EngineError
from .config import ModelConfig
from .frontend import FrontEnd
from .model import StableTTS

META_FORMAT = "gpuworker-stabletts-meta/1"
RESUMABLE_FORMAT = "gpuworker-stabletts-resumable/1"
BASE_SETTING = "--tts-base-model (env GPU_WORKER_TTS_BASE_MODEL)"
HUB_PREFIX = "hf://"


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
                "size": self.size, "origin": self.origin, **self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Meta":
        if d.get("format") != META_FORMAT:
            raise ValueError(f"format {d.get('format')!r}, want {META_FORMAT}")
        info = {k: v for k, v in d.items()
                if k not in ("format", "model_config", "frontend", "n_vocab", "size", "origin")}
        return cls(ModelConfig.from_dict(d["model_config"]), FrontEnd.from_dict(d["frontend"]),
                   d.get("size", "default"), d.get("origin", "fine-tuned"), info, published=False)


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def parse_hub(ref: str) -> tuple[str, str, str | None]:
    """hf://<owner>/<repo>[@revision]/<path/in/repo> -> (repo_id, filename, revision)."""
    parts = ref[len(HUB_PREFIX):].split("/")
    if not ref.startswith(HUB_PREFIX) or len(parts) < 3 or not all(parts):
        raise EngineError(f"hub reference {ref!r} is not hf://<owner>/<repo>/<path/in/repo>")
    repo, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{repo}", "/".join(parts[2:]), revision or None


def resolve(ref: str) -> str:
    """A local path, or a hub reference downloaded into the Hugging Face cache (with the
    sidecar beside it when the repository has one)."""
    if not ref:
        raise EngineError("no model file given")
    if not ref.startswith(HUB_PREFIX):
        if not os.path.isfile(ref):
            raise EngineError(f"model file not found: {ref}")
        return ref
    repo_id, filename, revision = parse_hub(ref)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise EngineError(f"{ref}: hub references need the huggingface_hub package") from None
    try:
        path = hf_hub_download(repo_id, filename, revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, missing repo or file, auth
        raise EngineError(f"cannot fetch {ref} from the Hugging Face hub ({type(e).__name__}: "
                          f"{e}); download it and give its local path instead") from None
    try:
        hf_hub_download(repo_id, os.path.splitext(filename)[0] + ".json", revision=revision)
    except Exception:  # noqa: BLE001 - no sidecar: a published model
        pass
    return path


def read_meta(path: str) -> Meta:
    """The sidecar's content; the published model's when there is none (a JSON file of
    another format beside the weights is not a sidecar)."""
    side = sidecar_path(path)
    if not os.path.exists(side):
        return Meta()
    try:
        with open(side, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("format") != META_FORMAT:
            return Meta()
        return Meta.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EngineError(f"cannot read the model's sidecar {side}: {e}") from None


def load_model(ref: str, device="cpu") -> tuple[StableTTS, Meta]:
    """A bare state_dict (with its sidecar, if any) -> (model in eval mode, meta); strict."""
    path = resolve(ref)
    meta = read_meta(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files raise many types
        raise EngineError(f"cannot read model {ref}: {type(e).__name__}: {e}") from None
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
    if not path or not os.path.isfile(path):
        raise EngineError(f"resumable checkpoint not found: {path}")
    try:
        # our own files; they hold numpy RNG state, so not weights_only
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != RESUMABLE_FORMAT:
        raise EngineError(f"{path} is not a resumable checkpoint of this engine")
    meta = Meta.from_dict(state["meta"])
    model = StableTTS(meta.config, len(meta.frontend))
    model.load_state_dict(state["model"], strict=True)
    return state, model, meta
