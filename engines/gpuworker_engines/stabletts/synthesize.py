"""The `synthesize` command: many texts, one voice reference, one WAV per item."""
import os
import time

import numpy as np
import torch

from .. import dataset, events
from ..events import EngineError, Interrupted
from . import ckpt
from .mel import MelSpectrogram, load_wav, wav_to_mel, write_wav
from .vocoder import load_vocoder

DEFAULTS = {"steps": 10, "temperature": 1.0, "cfg_scale": 3.0, "length_scale": 1.0,
            "solver": "euler", "vocoder": None, "batch_size": 8, "device": "auto", "seed": 1234}


def options(config: dict) -> dict:
    """Synthesis settings with defaults; null means default."""
    opts = {k: (config.get(k) if config.get(k) is not None else v) for k, v in DEFAULTS.items()}
    try:
        opts["steps"], opts["batch_size"] = int(opts["steps"]), int(opts["batch_size"])
        for k in ("temperature", "cfg_scale", "length_scale"):
            opts[k] = float(opts[k])
    except (TypeError, ValueError) as e:
        raise EngineError(f"config: bad synthesis setting: {e}") from None
    if opts["solver"] not in ("euler", "midpoint"):
        raise EngineError(f"config: solver must be euler or midpoint, not {opts['solver']!r}")
    if opts["steps"] < 1 or opts["batch_size"] < 1 or opts["length_scale"] <= 0:
        raise EngineError("config: steps, batch_size and length_scale must be positive")
    for k in ("checkpoint", "dataset", "output_dir"):
        if not config.get(k):
            raise EngineError(f"config: {k} is required")
    return opts


def device_for(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise EngineError("device cuda requested but no GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


def reference_mel(path: str, model, device) -> torch.Tensor:
    """[1, n_mels, T] log mel of a voice reference recording."""
    if not path or not os.path.exists(path):
        raise EngineError(f"voice reference not found: {path}")
    cfg = model.cfg
    return wav_to_mel(load_wav(path, cfg.sample_rate), MelSpectrogram(cfg)).unsqueeze(0).to(device)


def synth_batch(model, vocoder, id_lists, ref, opts, device) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token id lists -> [(mel [n_mels, frames], wav)] in the voice of ref [1, n_mels, T]."""
    lens = torch.tensor([len(ids) for ids in id_lists], device=device)
    x = torch.zeros(len(id_lists), int(lens.max()), dtype=torch.long, device=device)
    for i, ids in enumerate(id_lists):
        x[i, :len(ids)] = torch.tensor(ids, device=device)
    ref_lens = torch.tensor([ref.shape[2]], device=device)
    out = model.synthesize(x, lens, ref, ref_lens, steps=opts["steps"],
                           temperature=opts["temperature"], cfg_scale=opts["cfg_scale"],
                           length_scale=opts["length_scale"], solver=opts["solver"])
    with torch.no_grad():
        wavs = vocoder(out["mel"].float())
    hop = model.cfg.hop_length
    res = []
    for i, n in enumerate(out["mel_lens"].tolist()):
        res.append((out["mel"][i, :, :n].float().cpu().numpy(), wavs[i, :n * hop].float().cpu().numpy()))
    return res


def encode_all(table, texts) -> list[list[int]]:
    """Encodes texts; each unknown character is reported once, with what it is read as."""
    ids, unknown = [], {}
    for t in texts:
        i, u = table.encode(t)
        ids.append(i)
        unknown.update(u)
    if unknown:
        events.warning("characters not in the model's symbol table, read as: "
                       + ", ".join(f"{k!r}→{v!r}" for k, v in sorted(unknown.items())))
    return ids


def output_name(item_id: str) -> str:
    name = item_id.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return "_" + name if name.startswith(".") or not name else name


def run(config: dict, stop) -> dict:
    opts = options(config)
    device = device_for(opts["device"])
    torch.manual_seed(opts["seed"])
    model, table, _ = ckpt.load_model(config["checkpoint"], device)
    items = dataset.load(config["dataset"], need_audio=False, need_text=True)
    ref = reference_mel(config.get("voice_reference"), model, device)
    vocoder, vocoder_desc = load_vocoder(opts["vocoder"], model.cfg, device)
    out_dir = config["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    id_lists = encode_all(table, [it.text for it in items])
    order = sorted(range(len(items)), key=lambda i: len(id_lists[i]))  # little padding
    sr = model.cfg.sample_rate
    audio_s, t0 = 0.0, time.monotonic()
    for s in range(0, len(order), opts["batch_size"]):
        if stop:
            raise Interrupted(f"stopped after {s} of {len(items)} items")
        part = order[s:s + opts["batch_size"]]
        for i, (_, wav) in zip(part, synth_batch(model, vocoder, [id_lists[i] for i in part],
                                                 ref, opts, device)):
            path = os.path.join(out_dir, output_name(items[i].id) + ".wav")
            write_wav(path, wav, sr)
            audio_s += len(wav) / sr
            events.emit("item", id=items[i].id, path=path, duration=round(len(wav) / sr, 3))
        events.log(f"synthesized {min(s + opts['batch_size'], len(items))}/{len(items)}")
    wall = time.monotonic() - t0
    return {"count": len(items), "audio_seconds": round(audio_s, 3),
            "rtf": round(wall / audio_s, 4) if audio_s else None, "vocoder": vocoder_desc}
