"""Checkpoint contents: inference checkpoints (best/final) hold the weights, the
model config and the symbol table; resumable ones add the training state."""
import os

import torch

from ..events import EngineError
from .config import ModelConfig
from .model import StableTTS
from .text import SymbolTable

FORMAT = "gpuworker-stabletts/1"


def inference_state(model: StableTTS, table: SymbolTable, kind: str, **extra) -> dict:
    return {"format": FORMAT, "kind": kind, "model": model.state_dict(),
            "model_config": model.cfg.to_dict(), "symbols": table.to_dict(), **extra}


def read(path: str) -> dict:
    if not path or not os.path.exists(path):
        raise EngineError(f"checkpoint not found: {path}")
    try:
        # our own files; they hold numpy RNG state, so not weights_only
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - corrupt files raise many types
        raise EngineError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EngineError(f"{path} is not a StableTTS checkpoint of this engine")
    return state


def load_model(path: str, device="cpu") -> tuple[StableTTS, SymbolTable, dict]:
    """Any of our checkpoints -> (model in eval mode, symbols, raw state)."""
    state = read(path)
    cfg = ModelConfig.from_dict(state["model_config"])
    table = SymbolTable.from_dict(state["symbols"])
    model = StableTTS(cfg, len(table))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), table, state
