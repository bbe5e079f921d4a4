"""Batched greedy CTC transcription and the `transcribe` command."""
import tempfile
import time

import torch

from .. import dataset, events
from ..events import EngineError
from . import artifact, transmorgrifier
from .data import is_silent
from .model import featurize, load_audio, load_trained, output_lengths


def pick_device(name: str) -> str:
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {name} requested but no CUDA GPU is available")
    return name


@torch.no_grad()
def greedy(model, fe, tok, arch: str, waves: list, batch_size: int = 8, device: str = "cpu",
           suppress_unk: bool = False, on_batch=None) -> list[str]:
    """Transcribes waveforms in length-sorted batches; returns texts in input order."""
    model.eval()
    order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
    out = [""] * len(waves)
    unk = tok.unk_token_id
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = {k: v.to(device) for k, v in featurize(fe, arch, [waves[i] for i in idx]).items()}
        logits = model(**batch).logits
        if suppress_unk and unk is not None:
            logits[..., unk] = float("-inf")
        ids = logits.argmax(-1).cpu()
        lengths = output_lengths(model, batch["attention_mask"]).cpu()
        # batch_decode merges repeats, drops the blank and turns "|" into spaces
        texts = tok.batch_decode([ids[j, :lengths[j]].tolist() for j in range(len(idx))])
        for i, t in zip(idx, texts):
            out[i] = " ".join(t.split())
        if on_batch:
            on_batch([(i, out[i]) for i in idx])
    return out


def run(config: dict, stop) -> dict:
    """Transcribes every dataset item that has audio; text in the dataset is ignored."""
    src = config.get("model")
    if not src:
        raise EngineError("config: model (an ASR artifact or unpacked folder) is required")
    if not config.get("dataset"):
        raise EngineError("config: dataset is required")
    device = pick_device(config.get("device", "auto"))
    batch_size = int(config.get("batch_size") or 8)
    suppress_unk = bool(config.get("suppress_unk", False))
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    items = dataset.load(config["dataset"], need_audio=True, need_text=False)  # cheap checks first
    with tempfile.TemporaryDirectory(prefix="asr-model-") as tmp:
        directory = artifact.unpack(src, tmp)
        card = artifact.read_card(directory)
        model, fe, tok, arch = load_trained(directory, device)
        tm = transmorgrifier.load(directory)
        waves, kept, skipped = [], [], []
        for it in items:
            wav = load_audio(it.audio)
            if is_silent(wav):
                skipped.append({"id": it.id, "reason": "audio is silent"})
                events.warning(f"skipped item {it.id}: audio is silent")
                continue
            waves.append(wav)
            kept.append(it)
        audio_seconds = sum(len(w) for w in waves) / fe.sampling_rate
        events.log(f"transcribing {len(kept)} items ({audio_seconds:.1f}s of audio) on {device}"
                   f"{' with post-correction' if tm else ''}")
        t0 = time.monotonic()
        done = [0]
        eta = events.ETA(len(kept))

        def report(pairs):
            fixed = transmorgrifier.apply(tm, [t for _, t in pairs]) if tm else [t for _, t in pairs]
            for (i, raw), text in zip(pairs, fixed):
                events.emit("item", id=kept[i].id, text=text, raw_text=raw)
            done[0] += len(pairs)
            left = eta(done[0])
            events.log(f"transcribed {done[0]}/{len(kept)}"
                       + (f" eta {left:.0f}s" if left is not None else ""))
            if stop:
                raise events.Interrupted("stop requested during transcription")

        if kept:
            greedy(model, fe, tok, arch, waves, batch_size, device, suppress_unk, on_batch=report)
        elapsed = time.monotonic() - t0
    return {"count": len(kept), "skipped": skipped, "audio_seconds": round(audio_seconds, 3),
            "seconds": round(elapsed, 3),
            "rtf": round(elapsed / audio_seconds, 5) if audio_seconds else None,
            "post_corrected": tm is not None, "model_card": {k: card.get(k) for k in ("arch", "metrics")}}
