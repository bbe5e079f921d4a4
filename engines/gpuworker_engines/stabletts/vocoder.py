"""Mel -> waveform. A Vocos-style network (ConvNeXt backbone + inverse-STFT head)
whose weights come from a local file, or Griffin-Lim when none is configured.

The network's parameter names follow the published Vocos layout (backbone.embed,
backbone.convnext.N.*, head.out, ...) so its released weights load directly;
its sizes are read from the weight shapes.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import events
from ..events import EngineError
from .config import ModelConfig
from .mel import mel_filterbank


def load_vocoder(path: str | None, cfg: ModelConfig, device="cpu"):
    """Returns (vocoder, description); vocoder(mel [B, n_mels, T]) -> wav [B, T * hop]."""
    if not path:
        voc = GriffinLim(cfg).to(device)
        desc = "Griffin-Lim (no vocoder configured)"
    else:
        if not os.path.exists(path):
            raise EngineError(f"vocoder weights not found: {path}")
        voc = Vocos.from_file(path, cfg).to(device).eval()
        desc = f"Vocos from {path} ({voc.describe()})"
    events.log(f"vocoder: {desc}")
    return voc, desc


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class Backbone(nn.Module):
    def __init__(self, n_mels: int, dim: int, intermediate: int, layers: int):
        super().__init__()
        self.embed = nn.Conv1d(n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList([ConvNeXtBlock(dim, intermediate, 1 / layers)
                                       for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, mel):
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))  # [B, T, dim]


class ISTFTHead(nn.Module):
    """Predicts log-magnitude and phase per frame and inverts them with an ISTFT."""

    def __init__(self, dim: int, n_fft: int, hop: int, padding: str):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.n_fft, self.hop, self.padding = n_fft, hop, padding
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x):
        mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(mag).clamp(max=1e2)
        spec = torch.polar(mag, phase)
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop, self.n_fft, self.window, center=True)
        return overlap_add(spec, self.n_fft, self.hop, self.window)


class Vocos(nn.Module):
    def __init__(self, n_mels: int, dim: int, intermediate: int, layers: int, n_fft: int,
                 hop: int, padding: str = "center"):
        super().__init__()
        self.backbone = Backbone(n_mels, dim, intermediate, layers)
        self.head = ISTFTHead(dim, n_fft, hop, padding)
        self.hop = hop

    def forward(self, mel):
        wav = self.head(self.backbone(mel))
        return _fit(wav, mel.shape[2] * self.hop)

    def describe(self) -> str:
        b = self.backbone
        return (f"dim {b.embed.out_channels}, {len(b.convnext)} layers, "
                f"n_fft {self.head.n_fft}, padding {self.head.padding}")

    @classmethod
    def from_file(cls, path: str, cfg: ModelConfig, padding: str | None = None) -> "Vocos":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt or foreign files raise many types
            raise EngineError(f"cannot load vocoder weights {path}: {e}") from None
        for key in ("state_dict", "model", "generator"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        sd = {}
        for k, v in obj.items():
            for prefix in ("module.", "vocos.", "model.", "generator."):
                k = k.removeprefix(prefix)
            if k.startswith(("backbone.", "head.")):
                sd[k] = v
        try:
            emb = sd["backbone.embed.weight"]
            dim, n_mels = emb.shape[0], emb.shape[1]
            intermediate = sd["backbone.convnext.0.pwconv1.weight"].shape[0]
            layers = len({k.split(".")[2] for k in sd if k.startswith("backbone.convnext.")})
            n_fft = sd["head.out.weight"].shape[0] - 2
        except KeyError as e:
            raise EngineError(f"vocoder weights {path} are not a Vocos model (missing {e})") from None
        if n_mels != cfg.n_mels:
            raise EngineError(f"vocoder {path} expects {n_mels} mel bands, the model makes {cfg.n_mels}")
        if padding is None:
            padding = "center"
            side = os.path.splitext(path)[0] + ".json"
            if os.path.exists(side):  # optional {"padding": "same"} next to the weights
                import json
                with open(side, encoding="utf-8") as f:
                    padding = json.load(f).get("padding", "center")
        voc = cls(n_mels, dim, intermediate, layers, n_fft, cfg.hop_length, padding)
        sd = {k: v for k, v in sd.items() if k != "head.istft.window"}
        missing, unexpected = voc.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise EngineError(f"vocoder weights {path} do not fit: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
        return voc


class GriffinLim(nn.Module):
    """Mel -> linear magnitude by non-negative least squares (multiplicative updates),
    then fast Griffin-Lim (with momentum) for the phase. Intelligible, robotic: the
    fallback only."""

    def __init__(self, cfg: ModelConfig, n_iter: int = 32, momentum: float = 0.99):
        super().__init__()
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.n_iter, self.momentum = n_iter, momentum

    @torch.no_grad()
    def forward(self, mel):
        target = torch.exp(mel.float())
        up = self.fb.T @ target
        mag = up.clamp(min=1e-8)  # [B, freq, T]
        for _ in range(50):  # keeps magnitudes >= 0, unlike a pseudo-inverse
            mag = mag * up / (self.fb.T @ (self.fb @ mag)).clamp(min=1e-8)
        mag = torch.cat([mag, mag[:, :, -1:]], 2)  # centred STFT has one frame more
        length = mel.shape[2] * self.hop
        gen = torch.Generator().manual_seed(0)  # same input -> same audio
        phase = torch.rand(mag.shape, generator=gen).to(mag.device) * 2 * np.pi
        spec = torch.polar(mag, phase)
        prev = torch.zeros_like(spec)
        stft = dict(n_fft=self.n_fft, hop_length=self.hop, win_length=self.win,
                    window=self.window, center=True)
        for _ in range(self.n_iter):
            wav = torch.istft(spec, length=length, **stft)
            rebuilt = torch.stft(wav, return_complex=True, **stft)
            accel = rebuilt + self.momentum * (rebuilt - prev)
            prev = rebuilt
            spec = mag * accel / accel.abs().clamp(min=1e-8)
        return torch.istft(spec, length=length, **stft)


def overlap_add(spec, n_fft: int, hop: int, window):
    """ISTFT with "same" padding: trims (n_fft - hop) / 2 samples on each side."""
    frames = torch.fft.irfft(spec, n_fft, dim=1) * window[None, :, None]  # [B, n_fft, T]
    T = spec.shape[2]
    size = (T - 1) * hop + n_fft
    wav = F.fold(frames, (1, size), (1, n_fft), stride=(1, hop))[:, 0, 0]
    env = F.fold((window ** 2)[None, :, None].expand(1, -1, T), (1, size), (1, n_fft),
                 stride=(1, hop))[0, 0, 0]
    pad = (n_fft - hop) // 2
    return wav[:, pad:size - pad] / env[pad:size - pad].clamp(min=1e-11)


def _fit(wav, length: int):
    if wav.shape[1] >= length:
        return wav[:, :length]
    return F.pad(wav, (0, length - wav.shape[1]))
