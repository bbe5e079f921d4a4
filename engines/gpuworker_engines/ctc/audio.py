"""Audio in, model inputs out: reading clips, silence, features, output frame counts."""
from math import gcd

import numpy as np
import soundfile as sf
import torch

from ..events import EngineError
from . import SAMPLE_RATE

SILENCE_PEAK = 1e-3  # about -60 dBFS: nothing a microphone would call speech


def load_audio(path: str) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE; other rates are resampled."""
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise EngineError(f"read audio {path}: {e}") from None
    wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly
        g = gcd(sr, SAMPLE_RATE)
        wav = resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return wav


def duration(path: str) -> float:
    try:
        info = sf.info(path)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"unreadable audio {path}: {e}") from None
    return info.frames / info.samplerate


def is_silent(wav: np.ndarray) -> bool:
    return wav.size == 0 or float(np.max(np.abs(wav))) < SILENCE_PEAK


def input_key(fe) -> str:
    """W2V2-BERT's extractor gives fbank frames, classic wav2vec2's the raw waveform."""
    return "input_features" if type(fe).__name__ == "SeamlessM4TFeatureExtractor" else "input_values"


def featurize(fe, waves: list[np.ndarray]) -> dict:
    """Padded model inputs for a batch: {input_features|input_values, attention_mask}."""
    out = fe(waves, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
             return_tensors="pt")
    key = input_key(fe)
    return {key: out[key], "attention_mask": out["attention_mask"]}


def output_lengths(model, attention_mask: torch.Tensor) -> torch.Tensor:
    m = getattr(model, "module", model)
    return m._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)


def frames_per_second(model) -> float:
    """CTC output frames per second of audio (50 for wav2vec2, 25 for W2V2-BERT with adapter)."""
    n = 10 * SAMPLE_RATE
    m = getattr(model, "module", model)
    if type(m).__name__.startswith("Wav2Vec2Bert"):
        n = 10 * 100 + 1  # input length counts fbank frames (10 ms hop) for W2V2-BERT
        frames = int(m._get_feat_extract_output_lengths(torch.tensor([n // 2])))
        return frames / 10.0
    return int(m._get_feat_extract_output_lengths(torch.tensor([n]))) / 10.0
