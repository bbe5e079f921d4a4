"""StableTTS v1.1, read top-down. Module names and shapes are those of the
published checkpoint, so its state_dict loads strictly.

reference log-mel ──► ref_encoder ──► speaker vector c
token ids ──► encoder (DiT blocks conditioned on c) ──► hidden h, prior mu_x
h ──► dp ──► log durations; durations expand mu_x to mu_y (MAS in training)
decoder: flow matching from noise to mel, velocity from an estimator of DiT
blocks with FiLM time conditioning and U-Net long skips; classifier-free
guidance against the learned fake_speaker / fake_content.
Shapes are [batch, channels, time].

Training follows the published recipe (KdaiP's v1.1 models/model.py): an item
dropped for guidance (each independently, with probability cfg_dropout) gets
fake_speaker as its speaker vector in the text encoder, the duration predictor
and the flow decoder, and fake_content instead of mu_y in the decoder. Kept on
purpose: our flow loss leaves padded frames out, KdaiP's also sums
(1 - sigma_min)^2 z^2 over them. That term depends on no weight (same
gradients); it only makes the loss value grow with a batch's padding.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DiTBlock, channel_norm
from .config import ModelConfig
from .mas import maximum_path


class StableTTS(nn.Module):
    def __init__(self, cfg: ModelConfig, n_vocab: int):
        super().__init__()
        self.cfg = cfg
        self.fake_speaker = nn.Parameter(torch.zeros(1, cfg.gin_channels))
        self.fake_content = nn.Parameter(torch.zeros(1, cfg.n_mels, 1))
        self.encoder = TextEncoder(n_vocab, cfg)
        self.ref_encoder = StyleEncoder(cfg.n_mels, cfg.gin_channels, cfg.style_dropout)
        self.dp = DurationPredictor(cfg.hidden_channels, cfg.filter_channels, cfg.kernel_size,
                                    cfg.dp_dropout, cfg.gin_channels)
        self.decoder = FlowDecoder(cfg)

    def forward(self, x, x_lengths, y, y_lengths, ref, ref_lengths, generator=None,
                drop=None, flow_draws=None) -> dict:
        """Training losses for token ids x [b, Tx], log-mels y [b, mels, Ty] and reference
        log-mels ref [b, mels, Tr] (the voice). drop [b] (bool) names the items that learn
        the unconditional model; None draws them in training (see guidance_drop).
        flow_draws fixes the flow-matching draws (see FlowDecoder.loss)."""
        ref_mask = sequence_mask(ref_lengths, ref.shape[2]).unsqueeze(1).to(y.dtype)
        y_mask = sequence_mask(y_lengths, y.shape[2]).unsqueeze(1).to(y.dtype)
        c = self.ref_encoder(ref, ref_mask)
        if drop is None and self.training:
            drop = guidance_drop(y.shape[0], self.cfg.cfg_dropout, y.device, generator)
        if drop is not None:  # the fake speaker conditions every part, as published
            c = torch.where(drop[:, None], self.fake_speaker.to(c.dtype), c)
        h, mu_x, x_mask = self.encoder(x, c, x_lengths)
        logw = self.dp(h.detach(), x_mask, c.detach())

        with torch.no_grad():
            path = maximum_path(log_likelihood(mu_x.float(), y.float()), x_mask, y_mask)
        logw_target = torch.log(1e-8 + path.sum(2)).unsqueeze(1) * x_mask
        dur_loss = ((logw.float() - logw_target) ** 2).sum() / x_lengths.sum()

        mu_y = torch.bmm(mu_x, path.to(mu_x.dtype))
        prior_loss = (0.5 * ((y - mu_y.float()) ** 2 + math.log(2 * math.pi)) * y_mask).sum() \
            / (y_mask.sum() * self.cfg.n_mels)

        content = mu_y
        if drop is not None:
            content = torch.where(drop[:, None, None], self.fake_content.to(mu_y.dtype), mu_y)
        flow_loss = self.decoder.loss(y, y_mask, content, c, generator, flow_draws)
        return {"duration": dur_loss, "prior": prior_loss, "flow": flow_loss}

    @torch.no_grad()
    def synthesise(self, x, x_lengths, ref, *, steps: int, temperature: float, length_scale: float,
                   solver: str, cfg_scale: float, noise=None, generator=None) -> dict:
        """Mels for token ids x [b, Tx] in the voice of one reference log-mel ref [1, mels, T]
        (all of its frames). The settings are SynthesizeConfig's; noise [b, mels, Ty] fixes the
        initial ODE state."""
        c = self.ref_encoder(ref, None).expand(x.shape[0], -1)
        h, mu_x, x_mask = self.encoder(x, c, x_lengths)
        logw = self.dp(h, x_mask, c)
        w = torch.ceil(torch.exp(logw) * x_mask) * length_scale
        y_lengths = torch.clamp_min(w.sum((1, 2)), 1).long()
        y_mask = sequence_mask(y_lengths, int(y_lengths.max())).unsqueeze(1).to(mu_x.dtype)
        attn = alignment(w.squeeze(1), x_mask, y_mask)
        mu_y = torch.bmm(mu_x, attn)
        if noise is None:
            noise = torch.randn(mu_y.shape, device=mu_y.device, dtype=mu_y.dtype,
                                generator=generator)
        mel = self.decoder.sample(noise * temperature, mu_y, y_mask, c, self.fake_speaker,
                                  self.fake_content, steps, cfg_scale, solver)
        return {"mel": mel, "mel_lengths": y_lengths, "mu_y": mu_y, "attn": attn, "logw": logw}

    def extend_vocab(self, n_vocab: int) -> None:
        """Appends embedding rows up to n_vocab; existing rows keep their ids and values."""
        old = self.encoder.emb
        if n_vocab <= old.num_embeddings:
            return
        new = nn.Embedding(n_vocab, old.embedding_dim).to(old.weight.device, old.weight.dtype)
        nn.init.normal_(new.weight, 0.0, old.embedding_dim ** -0.5)
        with torch.no_grad():
            new.weight[:old.num_embeddings] = old.weight
        self.encoder.emb = new


def guidance_drop(batch: int, share: float, device, generator=None):
    """Which items of a training batch learn the unconditional model: each one
    independently with probability `share` (None when share is 0)."""
    if share <= 0:
        return None
    return torch.rand(batch, device=device, generator=generator) <= share


# ---------------------------------------------------------------- text side

class TextEncoder(nn.Module):
    def __init__(self, n_vocab: int, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_channels
        self.emb = nn.Embedding(n_vocab, h)
        nn.init.normal_(self.emb.weight, 0.0, h ** -0.5)
        self.encoder = nn.ModuleList([
            DiTBlock(h, cfg.filter_channels, cfg.n_heads, cfg.kernel_size, cfg.p_dropout,
                     cfg.gin_channels) for _ in range(cfg.n_enc_layers)])
        self.proj = nn.Conv1d(h, cfg.n_mels, 1)
        self.scale = math.sqrt(h)

    def forward(self, x, c, x_lengths):
        """-> hidden [b, h, Tx], mu_x [b, mels, Tx], mask [b, 1, Tx]."""
        h = (self.emb(x) * self.scale).transpose(1, 2)
        x_mask = sequence_mask(x_lengths, x.shape[1]).unsqueeze(1).to(h.dtype)
        for block in self.encoder:
            h = block(h, c, x_mask)
        return h, self.proj(h) * x_mask, x_mask


class DurationPredictor(nn.Module):
    def __init__(self, channels: int, filters: int, kernel: int, dropout: float, gin: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, filters, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(filters)
        self.conv2 = nn.Conv1d(filters, filters, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(filters)
        self.proj = nn.Conv1d(filters, 1, 1)
        self.cond = nn.Conv1d(gin, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, x_mask, c):
        """-> log durations [b, 1, Tx]."""
        h = h + self.cond(c.unsqueeze(2))
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            h = self.drop(channel_norm(norm, torch.relu(conv(h * x_mask))))
        return self.proj(h * x_mask) * x_mask


# ---------------------------------------------------------------- speaker

class StyleEncoder(nn.Module):
    """Log-mel -> speaker vector: frame-wise MLP, gated convolutions, self-attention,
    a projection and the mean over time. Its width is 128 whatever the model size."""
    WIDTH, KERNEL, HEADS = 128, 5, 2

    def __init__(self, n_mels: int, out_dim: int, dropout: float):
        super().__init__()
        w = self.WIDTH
        self.spectral = nn.Sequential(nn.Linear(n_mels, w), nn.Mish(), nn.Dropout(dropout),
                                      nn.Linear(w, w), nn.Mish(), nn.Dropout(dropout))
        self.temporal = nn.Sequential(GatedConv(w, self.KERNEL, dropout),
                                      GatedConv(w, self.KERNEL, dropout))
        self.slf_attn = nn.MultiheadAttention(w, self.HEADS, dropout=dropout, batch_first=True)
        self.fc = nn.Linear(w, out_dim)

    def forward(self, mel, mask=None):
        """mel [b, mels, T]; mask [b, 1, T] or None (every frame counts) -> [b, out_dim]."""
        x = self.spectral(mel.transpose(1, 2))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        pad = None if mask is None else mask.squeeze(1) < 0.5
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(2), 0.0)
        x, _ = self.slf_attn(x, x, x, key_padding_mask=pad, need_weights=False)
        x = self.fc(x)
        if pad is None:
            return x.mean(1)
        x = x.masked_fill(pad.unsqueeze(2), 0.0)
        return x.sum(1) / (~pad).sum(1, keepdim=True)


class GatedConv(nn.Module):
    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, 2 * channels, kernel, padding=(kernel - 1) // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        a, b = self.conv1(x).chunk(2, dim=1)
        return x + self.drop(a * torch.sigmoid(b))


# ---------------------------------------------------------------- flow matching

class FlowDecoder(nn.Module):
    """Optimal-transport conditional flow matching: x_t = (1 - (1 - s) t) z + t y."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sigma_min = cfg.sigma_min
        self.estimator = Estimator(cfg)

    def loss(self, y, y_mask, mu, c, generator=None, draws=None):
        """Mean squared velocity error over the real frames. draws = (u [b], z like y)
        fixes the random time (before the cosine schedule) and the noise."""
        b = y.shape[0]
        if draws is None:
            u = torch.rand(b, device=y.device, dtype=y.dtype, generator=generator)
            z = torch.randn(y.shape, device=y.device, dtype=y.dtype, generator=generator)
        else:
            u, z = draws
        t = (1 - torch.cos(u * math.pi / 2))[:, None, None]  # more samples near the noise
        x_t = (1 - (1 - self.sigma_min) * t) * z + t * y
        target = y - (1 - self.sigma_min) * z
        v = self.estimator(t.view(b), x_t, y_mask, mu, c).float()  # the loss in fp32 under autocast
        return (((v - target) ** 2) * y_mask).sum() / (y_mask.sum() * y.shape[1])

    def sample(self, x0, mu, mask, c, fake_speaker, fake_content, steps, cfg_scale, solver):
        """Integrates the velocity from t = 0 to 1 on linspace(0, 1, steps + 1);
        guidance v = v_u + s (v_c - v_u), s = 1 needs no unconditional pass."""
        from torchdiffeq import odeint

        b = x0.shape[0]
        if cfg_scale != 1.0:  # conditional and unconditional in one batch
            mu2 = torch.cat([mu, fake_content.expand(b, -1, mu.shape[2]).to(mu.dtype)])
            c2 = torch.cat([c, fake_speaker.expand(b, -1).to(c.dtype)])
            mask2 = torch.cat([mask, mask])

        def velocity(t, x):
            if cfg_scale == 1.0:
                return self.estimator(t, x, mask, mu, c)
            v = self.estimator(t, torch.cat([x, x]), mask2, mu2, c2)
            v_c, v_u = v[:b], v[b:]
            return v_u + cfg_scale * (v_c - v_u)

        t_span = torch.linspace(0, 1, steps + 1, device=x0.device)
        return odeint(velocity, x0, t_span, method=solver, rtol=1e-5, atol=1e-5)[-1]


class Estimator(nn.Module):
    """Velocity v(t, x_t, mu, c). Blocks of the first half store their input; blocks
    of the second half take the latest stored state back through a k=3 conv."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, f, k, n = cfg.hidden_channels, cfg.filter_channels, cfg.kernel_size, cfg.n_dec_layers
        self.time_mlp = TimeEmbedding(h, f)
        self.in_proj = nn.Conv1d(cfg.n_mels + h, h, 1)
        self.blocks = nn.ModuleList([DecoderBlock(h, f, cfg.n_heads, k, cfg.p_dropout,
                                                  cfg.gin_channels) for _ in range(n)])
        self.final_proj = nn.Conv1d(h, cfg.n_mels, 1)
        self.cond_proj = nn.Sequential(nn.Conv1d(cfg.n_mels, f, k, padding=k // 2), nn.SiLU(),
                                       nn.Conv1d(f, f, k, padding=k // 2), nn.SiLU(),
                                       nn.Conv1d(f, h, k, padding=k // 2))
        self.lsc_layers = nn.ModuleList([nn.Conv1d(2 * h, h, k, padding=k // 2)
                                         for _ in range(n // 2)])

    def forward(self, t, x, mask, mu, c):
        """t: 0-dim (shared) or [b]; x, mu [b, mels, T]; mask [b, 1, T]; c [b, gin]."""
        temb = self.time_mlp(t)
        x = self.in_proj(torch.cat([x, self.cond_proj(mu)], dim=1))
        n, half = len(self.blocks), len(self.lsc_layers)
        stored = []
        for i, block in enumerate(self.blocks):
            if i < half:
                stored.append(x)
            elif i >= n - half:
                x = self.lsc_layers[i - (n - half)](torch.cat([x, stored.pop()], dim=1))
            x = block(x, c, temb, mask)
        return self.final_proj(x * mask) * mask


class TimeEmbedding(nn.Module):
    def __init__(self, channels: int, filters: int):
        super().__init__()
        self.channels = channels
        self.layer = nn.Sequential(nn.Linear(channels, filters), nn.SiLU(),
                                   nn.Linear(filters, channels))

    def forward(self, t):
        if t.ndim < 1:
            t = t.unsqueeze(0)
        half = self.channels // 2
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
        angles = 1000 * t.float().unsqueeze(1) * freqs.unsqueeze(0)
        return self.layer(torch.cat([angles.sin(), angles.cos()], dim=-1).to(t.dtype))


class DecoderBlock(nn.Module):
    def __init__(self, hidden, filters, heads, kernel, dropout, gin):
        super().__init__()
        self.time_fusion = FiLM(hidden, hidden)
        self.block = DiTBlock(hidden, filters, heads, kernel, dropout, gin)

    def forward(self, x, c, temb, mask):
        return self.block(self.time_fusion(x, temb) * mask, c, mask)


class FiLM(nn.Module):
    def __init__(self, channels: int, cond: int):
        super().__init__()
        self.film = nn.Conv1d(cond, 2 * channels, 1)

    def forward(self, x, cond):
        gamma, beta = self.film(cond.unsqueeze(2)).chunk(2, dim=1)
        return gamma * x + beta


# ---------------------------------------------------------------- helpers

def sequence_mask(lengths, max_len: int):
    return torch.arange(max_len, device=lengths.device, dtype=lengths.dtype)[None] < lengths[:, None]


def alignment(durations, x_mask, y_mask):
    """Durations [b, Tx] (real numbers) -> 0/1 path [b, Tx, Ty]: frame j belongs to
    token i when the running sum before i <= j < the running sum through i."""
    end = torch.cumsum(durations, dim=1)
    start = F.pad(end, (1, 0))[:, :-1]
    j = torch.arange(y_mask.shape[2], device=durations.device, dtype=durations.dtype)
    path = (j[None, None] < end[..., None]).to(durations.dtype) \
        - (j[None, None] < start[..., None]).to(durations.dtype)
    return path * x_mask.transpose(1, 2) * y_mask


def log_likelihood(mu_x, y):
    """log N(y_j; mu_i, I) for every token i and frame j: [b, Tx, Ty]."""
    const = -0.5 * math.log(2 * math.pi) * mu_x.shape[1]
    return (const - 0.5 * (mu_x ** 2).sum(1).unsqueeze(2) + torch.bmm(mu_x.transpose(1, 2), y)
            - 0.5 * (y ** 2).sum(1).unsqueeze(1))
