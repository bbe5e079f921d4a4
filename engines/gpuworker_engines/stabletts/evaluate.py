"""The `evaluate` command: mel-cepstral distortion (with DTW) between synthesis and
the recordings of held-out items (the split train wrote), the quality figure a
training job reports. Each scored item's WAV is reported as an `item` event with
its text, so the worker can also transcribe it for a round-trip CER.

Cepstra are the DCT of the log-mel frames (c0, the loudness, left out), taken
from the model's mel output, so the figure measures the acoustic model and
not the vocoder. It compares runs of this engine, not published MCD values
computed from SPTK mel-cepstra.
"""
import math
import os

import numpy as np
import torch
from scipy.fft import dct

from .. import dataset, events, untrusted
from ..events import EngineError, Interrupted
from ..training import pick_device
from . import ckpt
from .mel import LogMel, load_wav, wav_to_mel, write_wav
from .config import EvaluateConfig
from .synthesize import encode_texts, frontend_for, output_name, reference_mel, synth_batch
from .vocoder import load_vocoder

N_CEPSTRA = 24
_K = 10.0 / math.log(10.0) * math.sqrt(2.0)


def cepstra(log_mel: np.ndarray, n: int = N_CEPSTRA) -> np.ndarray:
    """[n_mels, T] log mel -> [T, n] cepstral coefficients 1..n, scaled like a real
    cepstrum: c_k = 1/M * sum_m x_m cos(pi k (m + 1/2) / M)."""
    x = np.asarray(log_mel, dtype=np.float64)
    c = dct(x, type=2, axis=0, norm=None) / (2 * x.shape[0])
    return c[1:n + 1].T


def dtw(cost: np.ndarray) -> list[tuple[int, int]]:
    """Cheapest monotonic path through cost [N, M] (steps right, down, diagonal);
    the table is filled one anti-diagonal at a time."""
    N, M = cost.shape
    D = np.full((N + 1, M + 1), np.inf)
    D[0, 0] = 0.0
    for k in range(2, N + M + 1):
        i = np.arange(max(1, k - M), min(N, k - 1) + 1)
        j = k - i
        D[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(D[i - 1, j], D[i, j - 1]), D[i - 1, j - 1])
    path, i, j = [], N, M
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = np.argmin([D[i - 1, j - 1], D[i - 1, j], D[i, j - 1]])
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def mcd(log_mel_a: np.ndarray, log_mel_b: np.ndarray) -> float:
    """Mean mel-cepstral distortion (dB) over the DTW-aligned frame pairs."""
    a, b = cepstra(log_mel_a), cepstra(log_mel_b)
    n = min(a.shape[1], b.shape[1])
    a, b = a[:, :n], b[:, :n]
    dist = np.empty((len(a), len(b)))
    for s in range(0, len(a), 64):  # in row blocks: bounded memory for long items
        dist[s:s + 64] = np.sqrt(((a[s:s + 64, None, :] - b[None, :, :]) ** 2).sum(-1))
    path = dtw(dist)
    return float(_K * np.mean([dist[i, j] for i, j in path]))


def held_out(items, opts: EvaluateConfig) -> tuple[list, str, str | None]:
    """The items of the requested split (at most max_items), the split's name and the
    split file used. Without a split file (none given, none beside the checkpoint)
    every item is scored and the split is called "all"."""
    split = opts.split
    path = opts.split_file or os.path.join(os.path.dirname(os.path.abspath(opts.checkpoint)), "split.json")
    if os.path.exists(path):
        data = untrusted.read_json(path)
        wanted = data.get(split) if isinstance(data, dict) else None
        if not isinstance(wanted, list):
            raise EngineError(f"split file {path} has no list {split!r}")
        wanted = set(map(str, wanted))
        items = [it for it in items if it.id in wanted]
    elif opts.split_file:
        raise EngineError(f"split file not found: {path}")
    else:
        events.warning("no split file: scoring every item, the training items too")
        split, path = "all", None
    return (items[:opts.max_items] if opts.max_items > 0 else items), split, path


def run(config, stop) -> dict:
    opts = EvaluateConfig.of(config)
    device = pick_device(opts.device)
    model, meta = ckpt.load_model(opts.checkpoint, device)
    opts.preset("size", meta.size)
    items, split, split_file = held_out(
        dataset.load(opts.dataset, need_audio=True, need_text=True), opts)
    result = {"items_scored": 0, "split": split, "split_file": split_file}
    if not items:
        events.log(f"evaluate: no {split} item to score")
        return result
    write_audio = opts.write_audio
    vocoder = load_vocoder(opts.vocoder, model.cfg, meta.size, device)[0] if write_audio else None
    fe = frontend_for(meta.frontend, opts.frontend, [it.text for it in items])
    melspec = LogMel(model.cfg).to(device)
    sr = model.cfg.sample_rate
    shared_ref = (reference_mel(opts.voice_reference, melspec, sr, device)
                  if opts.voice_reference else None)
    out_dir = opts.output_dir
    os.makedirs(out_dir, exist_ok=True)
    id_lists, unmapped = encode_texts(fe, [it.text for it in items])
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    scores = []
    for it, ids in zip(items, id_lists):
        if stop:
            raise Interrupted(f"stopped after {len(scores)} of {len(items)} items")
        try:
            rec = wav_to_mel(load_wav(it.audio, sr), melspec).cpu().numpy()
        except EngineError as e:
            raise EngineError(f"item {it.id}: {e}") from None
        ref = shared_ref if shared_ref is not None else torch.from_numpy(rec)[None].to(device)
        mel, wav = synth_batch(model, vocoder, [ids], ref, opts, device, gen)[0]
        score = mcd(mel, rec)
        scores.append(score)
        fields = {"id": it.id, "text": it.text, "mcd": round(score, 4)}
        if write_audio:
            fields["path"] = os.path.join(out_dir, output_name(it.id) + ".wav")
            write_wav(fields["path"], wav, sr)
        events.emit("item", **fields)
        events.log(f"evaluate {len(scores)}/{len(items)}: {it.id} MCD {score:.3f} dB")
    result.update(mcd=round(float(np.mean(scores)), 4), items_scored=len(scores),
                  unmapped_characters=unmapped)
    return result
