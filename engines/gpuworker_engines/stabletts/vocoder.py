"""Mel -> waveform: the published Vocos (ConvNeXt backbone, ISTFT head with "same"
padding), or Griffin-Lim for the tiny model only.

A vocos.pt is a bare state_dict (read with weights_only=True: tensors only); its
sizes are read from the weight shapes and its features are the published 44.1 kHz
log-mels (hop n_fft / 4). A hf://<owner>/<repo>/<file> reference is taken from the
Hugging Face cache.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import events, hub, untrusted
from ..events import EngineError
from .config import ModelConfig
from .mel import mel_filterbank

VOCODER_SETTING = "--tts-vocoder (env GPU_WORKER_TTS_VOCODER)"
SAMPLE_RATE = 44100


def load_vocoder(path: str | None, cfg: ModelConfig, size: str, device="cpu"):
    """(vocoder, description); vocoder(mel [b, n_mels, T]) -> wav [b, T * hop]."""
    if not path:
        if size != "tiny":
            raise EngineError(f"no vocoder configured: a {size} model needs the published Vocos "
                              f"weights (vocos.pt); set {VOCODER_SETTING}. Griffin-Lim is "
                              "only for size tiny")
        voc = GriffinLim(cfg).to(device)
        desc = "Griffin-Lim (tiny model, no vocoder configured)"
    else:
        voc = Vocos.from_file(path).to(device).eval()
        if (voc.n_mels, voc.hop) != (cfg.n_mels, cfg.hop_length) or cfg.sample_rate != SAMPLE_RATE:
            raise EngineError(f"vocoder {path} takes {voc.n_mels} mels at {SAMPLE_RATE} Hz (hop "
                              f"{voc.hop}); the model makes {cfg.n_mels} at {cfg.sample_rate} Hz "
                              f"(hop {cfg.hop_length})")
        desc = f"Vocos {path} ({voc.describe()})"
    events.log(f"vocoder: {desc}")
    return voc, desc


class Vocos(nn.Module):
    def __init__(self, n_mels=128, dim=512, intermediate=1536, layers=8, n_fft=2048, hop=512):
        super().__init__()
        self.n_mels, self.hop = n_mels, hop
        self.backbone = Backbone(n_mels, dim, intermediate, layers)
        self.head = ISTFTHead(dim, n_fft, hop)

    def forward(self, mel):
        return self.head(self.backbone(mel))

    def describe(self) -> str:
        b = self.backbone
        return (f"dim {b.embed.out_channels}, {len(b.convnext)} layers, "
                f"{sum(p.numel() for p in self.parameters()) / 1e6:.1f} M parameters")

    @classmethod
    def from_file(cls, path: str) -> "Vocos":
        local = hub.local_file(path, "vocoder weights")
        sd = untrusted.load_tensors(local, path if local == path else f"{path} ({local})")
        try:
            emb = sd["backbone.embed.weight"]
            layers = len({k.split(".")[2] for k in sd if k.startswith("backbone.convnext.")})
            n_fft = sd["head.out.weight"].shape[0] - 2
            voc = cls(emb.shape[1], emb.shape[0], sd["backbone.convnext.0.pwconv1.weight"].shape[0],
                      layers, n_fft, n_fft // 4)
            voc.load_state_dict(sd, strict=True)
        except Exception as e:  # noqa: BLE001 - foreign files fail in many ways
            raise EngineError(f"vocoder {path} is not a Vocos state_dict in the published "
                              f"layout: {type(e).__name__}: {e}") from None
        return voc


class Backbone(nn.Module):
    def __init__(self, n_mels: int, dim: int, intermediate: int, layers: int):
        super().__init__()
        self.embed = nn.Conv1d(n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList([ConvNeXtBlock(dim, intermediate, 1 / layers)
                                       for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, mel):
        """[b, n_mels, T] -> [b, T, dim]."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)

    def forward(self, x):
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class ISTFTHead(nn.Module):
    """Per frame: log-magnitudes (exp, clipped at 100) and phases -> complex spectrum."""

    def __init__(self, dim: int, n_fft: int, hop: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = SameISTFT(n_fft, hop)

    def forward(self, x):
        log_mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = torch.clip(torch.exp(log_mag), max=1e2)
        return self.istft(torch.complex(mag * torch.cos(phase), mag * torch.sin(phase)))


class SameISTFT(nn.Module):
    """Inverse STFT with "same" padding: T frames -> exactly T * hop samples."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec):
        frames = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward")
        frames = frames * self.window[None, :, None]
        T = spec.shape[2]
        size = (T - 1) * self.hop + self.n_fft
        fold = dict(output_size=(1, size), kernel_size=(1, self.n_fft), stride=(1, self.hop))
        wav = F.fold(frames, **fold)[:, 0, 0]
        envelope = F.fold(self.window.square()[None, :, None].expand(1, -1, T), **fold)[0, 0, 0]
        trim = (self.n_fft - self.hop) // 2
        return wav[:, trim:size - trim] / envelope[trim:size - trim]


class GriffinLim(nn.Module):
    """Mel -> linear magnitude by non-negative least squares (multiplicative updates),
    then fast Griffin-Lim (with momentum) for the phase. Intelligible but robotic."""

    def __init__(self, cfg: ModelConfig, n_iter: int = 32, momentum: float = 0.99):
        super().__init__()
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).T
        self.register_buffer("fb", fb.contiguous(), persistent=False)  # [n_mels, bins]
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.n_iter, self.momentum = n_iter, momentum

    @torch.no_grad()
    def forward(self, mel):
        target = torch.exp(mel.float())
        up = self.fb.T @ target
        mag = up.clamp(min=1e-8)  # [b, bins, T]
        for _ in range(50):  # keeps magnitudes >= 0, unlike a pseudo-inverse
            mag = mag * up / (self.fb.T @ (self.fb @ mag)).clamp(min=1e-8)
        mag = torch.cat([mag, mag[:, :, -1:]], 2)  # a centred STFT has one frame more
        length = mel.shape[2] * self.hop
        gen = torch.Generator().manual_seed(0)  # same input -> same audio
        phase = torch.rand(mag.shape, generator=gen).to(mag.device) * 2 * torch.pi
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
