"""The `synthesize` command: many texts, one voice reference, one WAV per item."""
import os
import time

import torch

from .. import dataset, events
from ..events import EngineError, Interrupted
from ..training import pick_device
from . import ckpt
from .config import SynthesizeConfig
from .frontend import FrontEnd, describe_unmapped, encode_all, mostly_non_latin
from .mel import LogMel, load_wav, wav_to_mel, write_wav
from .vocoder import load_vocoder


def frontend_for(trained: FrontEnd, requested: str | None, texts) -> FrontEnd:
    """The model's front-end, or ipa/uroman/auto instead when it reads the published symbols."""
    if not requested or requested == trained.kind:
        return trained
    if requested not in ("auto", "ipa", "uroman") or trained.kind == "graphemes":
        raise EngineError(f"config: frontend {requested!r} does not fit this model, which "
                          f"reads {trained.kind}")
    if requested == "auto":
        requested = "uroman" if mostly_non_latin(texts) else "ipa"
    return FrontEnd(requested, trained.symbols, trained.lowercase)


def reference_mel(path: str, melspec: LogMel, sample_rate: int, device) -> torch.Tensor:
    """[1, n_mels, T] log-mel of a voice reference recording."""
    if not path or not os.path.exists(path):
        raise EngineError(f"voice reference not found: {path}")
    return wav_to_mel(load_wav(path, sample_rate), melspec).unsqueeze(0).to(device)


def synth_batch(model, vocoder, id_lists, ref, opts, device, generator) -> list[tuple]:
    """Token id lists -> [(mel [n_mels, frames], wav or None without a vocoder)] in the
    voice of ref [1, n_mels, T]."""
    lens = torch.tensor([len(ids) for ids in id_lists], device=device)
    x = torch.zeros(len(id_lists), int(lens.max()), dtype=torch.long, device=device)
    for i, ids in enumerate(id_lists):
        x[i, :len(ids)] = torch.tensor(ids, device=device)
    out = model.synthesise(x, lens, ref, steps=opts.steps, temperature=opts.temperature,
                           length_scale=opts.length_scale, solver=opts.solver,
                           cfg_scale=opts.cfg_scale, generator=generator)
    res = []
    with torch.no_grad():
        for i, n in enumerate(out["mel_lengths"].tolist()):
            mel = out["mel"][i:i + 1, :, :n].float()
            wav = vocoder(mel)[0].float().cpu().numpy() if vocoder is not None else None
            res.append((mel[0].cpu().numpy(), wav))
    return res


def output_name(item_id: str) -> str:
    name = item_id.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return "_" + name if name.startswith(".") or not name else name


def encode_texts(fe: FrontEnd, texts) -> tuple[list[list[int]], dict[str, int]]:
    ids, unmapped = encode_all(fe, texts)
    if unmapped:
        events.warning(describe_unmapped(unmapped, fe.kind))
    return ids, unmapped


def run(config, stop) -> dict:
    opts = SynthesizeConfig.of(config)
    device = pick_device(opts.device)
    model, meta = ckpt.load_model(opts.checkpoint, device)
    opts.preset("size", meta.size)
    vocoder, vocoder_desc = load_vocoder(opts.vocoder, model.cfg, meta.size, device)
    items = dataset.load(opts.dataset, need_audio=False, need_text=True)
    fe = frontend_for(meta.frontend, opts.frontend, [it.text for it in items])
    sr = model.cfg.sample_rate
    ref = reference_mel(opts.voice_reference, LogMel(model.cfg).to(device), sr, device)
    out_dir = opts.output_dir
    os.makedirs(out_dir, exist_ok=True)
    id_lists, unmapped = encode_texts(fe, [it.text for it in items])
    order = sorted(range(len(items)), key=lambda i: len(id_lists[i]))  # little padding
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    audio_s, t0 = 0.0, time.monotonic()
    for s in range(0, len(order), opts.batch_size):
        if stop:
            raise Interrupted(f"stopped after {s} of {len(items)} items")
        part = order[s:s + opts.batch_size]
        for i, (_, wav) in zip(part, synth_batch(model, vocoder, [id_lists[i] for i in part],
                                                 ref, opts, device, gen)):
            path = os.path.join(out_dir, output_name(items[i].id) + ".wav")
            write_wav(path, wav, sr)
            audio_s += len(wav) / sr
            events.emit("item", id=items[i].id, path=path, duration=round(len(wav) / sr, 3))
        events.log(f"synthesized {min(s + opts.batch_size, len(items))}/{len(items)}")
    wall = time.monotonic() - t0
    return {"count": len(items), "audio_seconds": round(audio_s, 3),
            "rtf": round(wall / audio_s, 4) if audio_s else None, "vocoder": vocoder_desc,
            "frontend": fe.kind, "unmapped_characters": unmapped}
