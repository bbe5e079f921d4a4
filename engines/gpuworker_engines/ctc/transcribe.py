"""The `transcribe` command of the CTC engines: every dataset item with audio gets a text.

Text in the dataset is ignored. Decoding uses the artifact's language model when it
has one (`decoder: auto`, the default), and its post-corrector when it has one.
"""
import os
import tempfile
import time

import torch

from .. import dataset, events, untrusted
from ..training import pick_device
from . import SAMPLE_RATE, artifact, corrector, infer, lm
from .config import TranscribeConfig
from .audio import duration, is_silent, load_audio
from .decode import Beam, Greedy, Labels


def choose_decoder(choice: str, directory: str, labels: Labels, beam_width: int, shown: str | None = None):
    """choice: auto | lm | greedy (TranscribeConfig.decoder)."""
    if choice != "greedy":
        decoder = lm.load(directory, labels, shown)
        if decoder is not None:
            return Beam(decoder, labels, beam_width)
        if choice == "lm":
            events.warning("this model has no usable language model: decoding greedily")
    return Greedy(labels)


def run(recipe, cfg: TranscribeConfig, stop) -> dict:
    src = cfg.model
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    items = dataset.load(cfg.dataset, need_audio=True, need_text=False)  # cheap checks first
    with tempfile.TemporaryDirectory(prefix="asr-model-") as tmp:
        directory = artifact.unpack(src, os.path.join(tmp, "model"))
        with untrusted.shown_as(directory, src):  # errors name the artifact the config gave
            card = artifact.read_card(directory)
            # mms: the base the adapter belongs to, when the config names one
            model, fe, tok = recipe.load_model(directory, device, getattr(cfg, "base_model", None))
            labels = Labels(tok.get_vocab())
            # a language model that does not load is warned about, not raised: the warning names src itself
            decode = choose_decoder(cfg.decoder, directory, labels, cfg.beam_width, src)
            tm = corrector.load(directory)
        tr = infer.Transcriber(model, fe, device, cfg)
        kept, skipped = [], []
        for it in items:
            if duration(it.audio) > cfg.max_audio_seconds:
                skipped.append({"id": it.id, "reason": f"audio longer than {cfg.max_audio_seconds:g}s"})
            elif is_silent(load_audio(it.audio)):
                skipped.append({"id": it.id, "reason": "audio is silent"})
            else:
                kept.append(it)
        for s in skipped:
            events.warning(f"skipped item {s['id']}: {s['reason']}")
        audio_seconds = sum(duration(it.audio) for it in kept)
        events.log(f"transcribing {len(kept)} items ({audio_seconds:.1f}s of audio) on {device} in "
                   f"{str(tr.dtype).removeprefix('torch.')}, decoder {decode.name}"
                   f"{', with post-correction' if tm else ''}")
        t0 = time.monotonic()
        eta = events.ETA(len(kept))
        for n, (i, lp) in enumerate(tr.stream([it.audio for it in kept]), 1):
            raw = decode([lp])[0]
            text = corrector.apply(tm, [raw])[0] if tm and raw else raw
            events.emit("item", id=kept[i].id, text=text, raw_text=raw)
            if n % 50 == 0 or n == len(kept):
                left = eta(n)
                events.log(f"transcribed {n}/{len(kept)}" + (f" eta {left:.0f}s" if left is not None else ""))
            if stop:
                raise events.Interrupted("stop requested during transcription")
        elapsed = time.monotonic() - t0
    return {"items": len(kept), "count": len(kept), "skipped": skipped, "decoder": decode.name,
            "audio_seconds": round(audio_seconds, 3), "seconds": round(elapsed, 3),
            "rtf": round(elapsed / audio_seconds, 5) if audio_seconds else None,
            "precision": str(tr.dtype).removeprefix("torch."), "post_corrected": tm is not None,
            "sample_rate": SAMPLE_RATE, "model_card": {k: card.get(k) for k in ("engine", "arch", "metrics")}}
