"""Log-magnitude slaney mel spectrogram and audio file helpers."""
import math

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from ..events import EngineError
from .config import ModelConfig


def _hz_to_mel(f):
    # slaney scale: linear below 1 kHz, logarithmic above
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangular filters, slaney-normalised (constant energy per band)."""
    f_max = f_max or sr / 2
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return fb.astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """wav [B, T] -> log mel [B, n_mels, T // hop]; reflect padding instead of centring."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        pad = (self.n_fft - self.hop) // 2
        wav = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(wav, self.n_fft, self.hop, self.win, self.window, center=False,
                          return_complex=True)
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.fb @ self.magnitude(wav), min=1e-5))


def load_wav(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at sample_rate."""
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise EngineError(f"cannot read audio {path}: {e}") from None
    wav = wav.mean(axis=1)
    if sr != sample_rate:
        g = math.gcd(sr, sample_rate)
        wav = resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)
    return wav


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM, peak-limited so loud synthesis does not wrap around."""
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:
        wav = wav * (0.99 / peak)
    sf.write(path, wav, sample_rate, subtype="PCM_16")


def wav_to_mel(wav: np.ndarray, mel: MelSpectrogram) -> torch.Tensor:
    """[n_mels, frames] for one waveform (needs at least n_fft//2 samples for the padding)."""
    need = mel.n_fft // 2 + 1
    if len(wav) < need:
        wav = np.pad(wav, (0, need - len(wav)))
    with torch.no_grad():
        return mel(torch.from_numpy(np.ascontiguousarray(wav)).unsqueeze(0))[0]
