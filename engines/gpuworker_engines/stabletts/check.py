"""The `check` command (gpu-worker doctor): loads each configured file strictly."""
from ..events import EngineError
from . import ckpt
from .vocoder import SAMPLE_RATE, Vocos


def run(config: dict, stop) -> dict:
    result = {}
    if config.get("vocoder"):
        voc = Vocos.from_file(ckpt.resolve(config["vocoder"]))
        result["vocoder"] = {"parameters": sum(p.numel() for p in voc.parameters()),
                             "sample_rate": SAMPLE_RATE, "n_mels": voc.n_mels,
                             "describe": voc.describe()}
    if config.get("base_checkpoint"):
        model, meta = ckpt.load_model(config["base_checkpoint"])
        result["base_checkpoint"] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "symbols": len(meta.frontend), "frontend": meta.frontend.kind,
            "published": meta.published, "size": meta.size,
            "sample_rate": meta.config.sample_rate}
    if not result:
        raise EngineError("check: nothing to check (give vocoder and/or base_checkpoint)")
    return result
