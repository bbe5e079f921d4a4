"""The published log-mel: reflect-pad (n_fft - hop) / 2, STFT without centring,
magnitude sqrt(re² + im² + 1e-6), slaney mel filterbank, ln(max(mel, 1e-5)).
Also audio file helpers: audio at another rate is resampled as the published
recipe does (KdaiP's load_and_resample_audio: first channel, then
torchaudio.functional.resample with its defaults, a Hann-windowed sinc of 6 zero
crossings and rolloff 0.99), for training items and voice references alike."""
import math

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from ..events import EngineError
from .config import ModelConfig

LOG_FLOOR = 1e-5


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    # slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
    log_step = math.log(6.4) / 27.0
    return torch.where(f >= 1000.0, 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / log_step,
                       f / (200.0 / 3))


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(m >= 15.0, 1000.0 * torch.exp(log_step * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                   f_max: float | None) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters on the slaney scale, each scaled to
    2 / its bandwidth in Hz (float32 throughout)."""
    f_max = f_max if f_max is not None else sample_rate / 2
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz(torch.linspace(float(_hz_to_mel(torch.tensor(float(f_min)))),
                                      float(_hz_to_mel(torch.tensor(float(f_max)))), n_mels + 2))
    width = edges[1:] - edges[:-1]
    offset = edges[None, :] - freqs[:, None]  # [bins, n_mels + 2]
    falling = -offset[:, :-2] / width[:-1]
    rising = offset[:, 2:] / width[1:]
    fb = torch.clamp(torch.minimum(falling, rising), min=0.0)
    return fb * (2.0 / (edges[2:] - edges[:-2]))[None, :]


class LogMel(torch.nn.Module):
    """wav [b, samples] -> log-mel [b, n_mels, frames],
    frames = (samples + 2 * pad - n_fft) // hop + 1 with pad = (n_fft - hop) // 2."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.pad = (cfg.n_fft - cfg.hop_length) // 2
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer("fb", mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels,
                                                  cfg.f_min, cfg.f_max), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim == 3:
            wav = wav.squeeze(1)
        wav = F.pad(wav.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        spec = torch.stft(wav, self.n_fft, self.hop, self.win, self.window, center=False,
                          return_complex=True)
        spec = torch.view_as_real(spec)
        return torch.sqrt(spec.pow(2).sum(-1) + 1e-6)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.magnitude(wav).transpose(1, 2), self.fb).transpose(1, 2)
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))


def load_wav(path: str, sample_rate: int) -> np.ndarray:
    """First channel as float32 at sample_rate."""
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise EngineError(f"cannot read audio {path}: {e}") from None
    wav = np.ascontiguousarray(wav[:, 0])
    if sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav


def resample(wav: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """float32 samples from `rate` to `new_rate` exactly as the published recipe."""
    with torch.no_grad():
        out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None],
                          rate, new_rate)
    return out[0].numpy()


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM, peak-limited so loud synthesis does not wrap around."""
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:
        wav = wav * (0.99 / peak)
    sf.write(path, wav, sample_rate, subtype="PCM_16")


def wav_to_mel(wav: np.ndarray, mel: LogMel) -> torch.Tensor:
    """[n_mels, frames] for one waveform (padded to the minimum the reflect pad needs)."""
    need = mel.pad + 1
    if len(wav) < max(need, mel.n_fft - 2 * mel.pad):
        wav = np.pad(wav, (0, max(need, mel.n_fft - 2 * mel.pad) - len(wav)))
    with torch.no_grad():
        return mel(torch.from_numpy(np.ascontiguousarray(wav)).unsqueeze(0))[0]
