"""The `check` command (gpu-worker doctor): loads each configured file strictly."""
from ..events import EngineError
from ..training import pick_device
from . import ckpt
from .config import CheckConfig
from .vocoder import SAMPLE_RATE, Vocos


def run(config, stop) -> dict:
    cfg = CheckConfig.of(config)
    device = pick_device(cfg.device)
    result = {}
    if cfg.vocoder:
        voc = Vocos.from_file(cfg.vocoder).to(device)
        result["vocoder"] = {"parameters": sum(p.numel() for p in voc.parameters()),
                             "sample_rate": SAMPLE_RATE, "n_mels": voc.n_mels,
                             "describe": voc.describe()}
    if cfg.base_checkpoint:
        model, meta = ckpt.load_model(cfg.base_checkpoint, device)
        result["base_checkpoint"] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "symbols": len(meta.frontend), "frontend": meta.frontend.kind,
            "published": meta.published, "size": meta.size,
            "sample_rate": meta.config.sample_rate}
    if not result:
        raise EngineError("check: nothing to check (give vocoder and/or base_checkpoint)")
    return result
