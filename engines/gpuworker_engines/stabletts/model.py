"""StableTTS-architecture acoustic model, read top-down.

text ids ──► TextEncoder (DiT blocks, adaLN-Zero on the speaker vector) ──► mu_x
                                        └─► DurationPredictor ──► log durations
mel ──► StyleEncoder (random 1/12–1/3 slice in training) ──► speaker vector
MAS aligns mu_x to the mel (training); durations expand mu_x to mu_y;
FlowDecoder: conditional flow matching from noise to mel, guided by mu_y and
the speaker vector, with a DiT estimator with U-Net-style long skips.
Classifier-free guidance: a learned "empty" speaker/content replaces the real
ones with probability cfg_dropout in training.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .mas import maximum_path


class StableTTS(nn.Module):
    def __init__(self, cfg: ModelConfig, n_symbols: int):
        super().__init__()
        self.cfg = cfg
        self.style_encoder = StyleEncoder(cfg.n_mels, cfg.hidden, cfg.style_dim, cfg.heads)
        self.encoder = TextEncoder(n_symbols, cfg)
        self.duration_predictor = DurationPredictor(cfg)
        self.decoder = FlowDecoder(cfg)
        self.fake_speaker = nn.Parameter(torch.zeros(cfg.style_dim))
        self.fake_content = nn.Parameter(torch.zeros(cfg.n_mels))
        # log mels are standardised inside the model with the training data's statistics
        self.register_buffer("mel_mean", torch.zeros(1))
        self.register_buffer("mel_std", torch.ones(1))

    def set_mel_stats(self, mean: float, std: float) -> None:
        self.mel_mean.fill_(mean)
        self.mel_std.fill_(max(std, 1e-3))

    def forward(self, x, x_lens, y, y_lens, generator=None) -> dict:
        """Training losses for token ids x [B, Tx] and log mels y [B, n_mels, Ty]."""
        y = (y - self.mel_mean) / self.mel_std
        x_mask = sequence_mask(x_lens, x.shape[1]).unsqueeze(1).to(y.dtype)
        y_mask = sequence_mask(y_lens, y.shape[2]).unsqueeze(1).to(y.dtype)
        ref, ref_mask = random_slice(y, y_lens, self.cfg.style_slice_min,
                                     self.cfg.style_slice_max, generator)
        style = self.style_encoder(ref, ref_mask)
        h, mu_x = self.encoder(x, x_mask, style)
        logw = self.duration_predictor(h.detach(), x_mask, style)

        with torch.no_grad():
            path = maximum_path(gaussian_log_likelihood(mu_x.float(), y.float()), x_mask, y_mask)
        durations = path.sum(2, keepdim=True).transpose(1, 2)  # [B, 1, Tx]
        logw_target = torch.log(durations.clamp(min=1e-6)) * x_mask
        dur_loss = ((logw - logw_target) ** 2).sum() / x_mask.sum()

        mu_y = torch.bmm(mu_x, path.to(mu_x.dtype))  # [B, n_mels, Ty]
        prior_loss = (0.5 * ((y - mu_y) ** 2 + math.log(2 * math.pi)) * y_mask).sum() \
            / (y_mask.sum() * self.cfg.n_mels)

        # classifier-free guidance: sometimes learn the velocity without voice and text
        drop = torch.rand(y.shape[0], device=y.device, generator=generator) < self.cfg.cfg_dropout
        if not self.training:
            drop = torch.zeros_like(drop)
        style_c = torch.where(drop[:, None], self.fake_speaker.to(style.dtype)[None], style)
        mu_c = torch.where(drop[:, None, None], self.fake_content.to(mu_y.dtype)[None, :, None], mu_y)
        flow_loss = self.decoder.loss(y, y_mask, mu_c, style_c, generator)
        return {"dur": dur_loss, "prior": prior_loss, "flow": flow_loss}

    @torch.no_grad()
    def synthesize(self, x, x_lens, ref, ref_lens, steps=10, temperature=1.0, cfg_scale=3.0,
                   length_scale=1.0, solver="euler", generator=None) -> dict:
        """Mels for token ids x [B, Tx] in the voice of ref [1 or B, n_mels, T]."""
        ref = (ref - self.mel_mean) / self.mel_std
        x_mask = sequence_mask(x_lens, x.shape[1]).unsqueeze(1).to(ref.dtype)
        ref_mask = sequence_mask(ref_lens, ref.shape[2]).unsqueeze(1).to(ref.dtype)
        style = self.style_encoder(ref, ref_mask).expand(x.shape[0], -1)
        h, mu_x = self.encoder(x, x_mask, style)
        logw = self.duration_predictor(h, x_mask, style)
        durations = torch.ceil(torch.exp(logw) * length_scale) * x_mask  # [B, 1, Tx]
        y_lens = durations.sum((1, 2)).clamp(min=1).long()
        y_mask = sequence_mask(y_lens, int(y_lens.max())).unsqueeze(1).to(ref.dtype)
        path = expand_path(durations.squeeze(1), y_mask.shape[2])
        mu_y = torch.bmm(mu_x, path.to(mu_x.dtype))
        mel = self.decoder.sample(mu_y, y_mask, style, self.fake_content, self.fake_speaker,
                                  steps, temperature, cfg_scale, solver, generator)
        mel = (mel * self.mel_std + self.mel_mean) * y_mask + (1 - y_mask) * math.log(1e-5)
        return {"mel": mel, "mel_lens": y_lens, "durations": durations.squeeze(1)}

    def extend_symbols(self, n_symbols: int) -> None:
        """Grows the embedding table to n_symbols rows; existing rows are kept as they are."""
        old = self.encoder.embed
        if n_symbols <= old.num_embeddings:
            return
        new = nn.Embedding(n_symbols, old.embedding_dim).to(old.weight.device, old.weight.dtype)
        nn.init.normal_(new.weight, 0.0, old.embedding_dim ** -0.5)
        with torch.no_grad():
            new.weight[:old.num_embeddings] = old.weight
        self.encoder.embed = new


# ---------------------------------------------------------------- components

class StyleEncoder(nn.Module):
    """Mel frames -> one speaker vector: convolutions, then attention pooling."""

    def __init__(self, n_mels: int, hidden: int, style_dim: int, heads: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(n_mels if i == 0 else hidden, hidden, 5, padding=2)
                                    for i in range(3)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(3)])
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * hidden ** -0.5)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.out = nn.Linear(hidden, style_dim)

    def forward(self, mel, mask):
        h = mel * mask
        for conv, norm in zip(self.convs, self.norms):
            h = F.gelu(norm(conv(h * mask).transpose(1, 2))).transpose(1, 2)
        h = (h * mask).transpose(1, 2)
        pooled, _ = self.attn(self.query.expand(h.shape[0], -1, -1), h, h,
                              key_padding_mask=mask.squeeze(1) < 0.5, need_weights=False)
        return self.out(pooled.squeeze(1))


class TextEncoder(nn.Module):
    def __init__(self, n_symbols: int, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, cfg.hidden)
        nn.init.normal_(self.embed.weight, 0.0, cfg.hidden ** -0.5)
        self.blocks = nn.ModuleList([DiTBlock(cfg.hidden, cfg.filter, cfg.heads, cfg.style_dim,
                                              cfg.kernel_size, cfg.dropout)
                                     for _ in range(cfg.encoder_layers)])
        self.norm = nn.LayerNorm(cfg.hidden)
        self.proj_mu = nn.Linear(cfg.hidden, cfg.n_mels)
        self.scale = math.sqrt(cfg.hidden)

    def forward(self, x, x_mask, style):
        """-> hidden states [B, hidden, Tx] and the mel-space prior mu_x [B, n_mels, Tx]."""
        mask = x_mask.transpose(1, 2)  # [B, Tx, 1]
        h = self.embed(x) * self.scale * mask
        for block in self.blocks:
            h = block(h, mask, style)
        h = self.norm(h) * mask
        mu = self.proj_mu(h) * mask
        return h.transpose(1, 2), mu.transpose(1, 2)


class DurationPredictor(nn.Module):
    """VITS-style: two conv-ReLU-LayerNorm layers on detached text states -> log duration."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.dp_kernel
        self.cond = nn.Linear(cfg.style_dim, cfg.hidden)
        self.conv1 = nn.Conv1d(cfg.hidden, cfg.dp_filter, k, padding=k // 2)
        self.norm1 = nn.LayerNorm(cfg.dp_filter)
        self.conv2 = nn.Conv1d(cfg.dp_filter, cfg.dp_filter, k, padding=k // 2)
        self.norm2 = nn.LayerNorm(cfg.dp_filter)
        self.proj = nn.Conv1d(cfg.dp_filter, 1, 1)
        self.drop = nn.Dropout(cfg.dp_dropout)

    def forward(self, h, x_mask, style):
        h = h + self.cond(style).unsqueeze(2)
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            h = torch.relu(conv(h * x_mask))
            h = self.drop(norm(h.transpose(1, 2)).transpose(1, 2))
        return self.proj(h * x_mask) * x_mask


class FlowDecoder(nn.Module):
    """Optimal-transport conditional flow matching: x_t = (1-(1-s)t) z + t y."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sigma_min = cfg.sigma_min
        self.estimator = DiTEstimator(cfg)

    def loss(self, y, y_mask, mu, style, generator=None):
        B = y.shape[0]
        u = torch.rand(B, device=y.device, generator=generator, dtype=y.dtype)
        t = 1 - torch.cos(u * math.pi / 2)  # cosine schedule: more steps near the noise end
        z = torch.randn(y.shape, device=y.device, generator=generator, dtype=y.dtype)
        tt = t[:, None, None]
        x_t = (1 - (1 - self.sigma_min) * tt) * z + tt * y
        target = y - (1 - self.sigma_min) * z
        v = self.estimator(x_t, y_mask, mu, t, style)
        return (((v - target) ** 2) * y_mask).sum() / (y_mask.sum() * y.shape[1])

    def sample(self, mu, y_mask, style, fake_content, fake_speaker, steps, temperature,
               cfg_scale, solver, generator=None):
        if solver not in ("euler", "midpoint"):
            raise ValueError(f"unknown ODE solver {solver!r} (euler or midpoint)")
        B = mu.shape[0]
        x = torch.randn(mu.shape, device=mu.device, generator=generator, dtype=mu.dtype)
        x = x * temperature * y_mask
        guided = cfg_scale != 0
        if guided:  # one batched pass for the real and the "empty" condition
            mu2 = torch.cat([mu, fake_content[None, :, None].expand_as(mu)])
            style2 = torch.cat([style, fake_speaker[None].expand_as(style)])
            mask2 = torch.cat([y_mask, y_mask])

        def velocity(x, t):
            tb = torch.full((B,), t, device=x.device, dtype=x.dtype)
            if not guided:
                return self.estimator(x, y_mask, mu, tb, style)
            v = self.estimator(torch.cat([x, x]), mask2, mu2, torch.cat([tb, tb]), style2)
            cond, empty = v[:B], v[B:]
            return cond + cfg_scale * (cond - empty)

        ts = torch.linspace(0, 1, steps + 1).tolist()
        for t0, t1 in zip(ts[:-1], ts[1:]):
            dt = t1 - t0
            if solver == "euler":
                x = x + dt * velocity(x, t0)
            else:
                x_mid = x + dt / 2 * velocity(x, t0)
                x = x + dt * velocity(x_mid, t0 + dt / 2)
        return x * y_mask


class DiTEstimator(nn.Module):
    """Velocity field v(x_t, mu, t, speaker): DiT blocks; the first half's outputs are
    concatenated back into the second half in reverse order (long skips)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, n = cfg.decoder_hidden, cfg.decoder_layers
        self.inp = nn.Linear(2 * cfg.n_mels, H)
        self.time = nn.Sequential(nn.Linear(H, 4 * H), nn.SiLU(), nn.Linear(4 * H, H))
        self.speaker = nn.Linear(cfg.style_dim, H)
        self.blocks = nn.ModuleList([DiTBlock(H, cfg.decoder_filter, cfg.decoder_heads, H,
                                              cfg.kernel_size, cfg.dropout) for _ in range(n)])
        self.n_skips = n // 2
        self.skip_proj = nn.ModuleList([nn.Linear(2 * H, H) for _ in range(self.n_skips)])
        self.final_norm = nn.LayerNorm(H, elementwise_affine=False)
        self.final_mod = nn.Linear(H, 2 * H)
        self.out = nn.Linear(H, cfg.n_mels)
        for lin in (self.final_mod, self.out):  # start as the zero velocity, like DiT
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.H = H

    def forward(self, x_t, y_mask, mu, t, style):
        mask = y_mask.transpose(1, 2)  # [B, T, 1]
        h = self.inp(torch.cat([x_t, mu], 1).transpose(1, 2)) * mask
        c = self.time(timestep_embedding(t * 1000, self.H).to(h.dtype)) + self.speaker(style)
        n = len(self.blocks)
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= n - self.n_skips:
                h = self.skip_proj[i - (n - self.n_skips)](torch.cat([h, skips.pop()], -1))
            h = block(h, mask, c)
            if i < self.n_skips:
                skips.append(h)
        shift, scale = self.final_mod(F.silu(c)).unsqueeze(1).chunk(2, -1)
        v = self.out(self.final_norm(h) * (1 + scale) + shift) * mask
        return v.transpose(1, 2)


class DiTBlock(nn.Module):
    """Self-attention and a convolutional feed-forward, each modulated by the condition
    (adaLN-Zero: shift, scale and a gate that starts at zero, so blocks start as identity)."""

    def __init__(self, dim: int, filter: int, heads: int, cond_dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = RotaryAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff1 = nn.Conv1d(dim, filter, kernel, padding=kernel // 2)
        self.ff2 = nn.Conv1d(filter, dim, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)
        self.modulation = nn.Linear(cond_dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h, mask, c):
        """h [B, T, dim], mask [B, T, 1], c [B, cond_dim]."""
        s1, g1, b1, s2, g2, b2 = self.modulation(F.silu(c)).unsqueeze(1).chunk(6, -1)
        a = self.norm1(h) * (1 + s1) + b1
        h = h + g1 * self.attn(a * mask, mask)
        f = (self.norm2(h) * (1 + s2) + b2) * mask
        f = self.ff2(self.drop(F.gelu(self.ff1(f.transpose(1, 2)))) * mask.transpose(1, 2))
        return (h + g2 * f.transpose(1, 2)) * mask


class RotaryAttention(nn.Module):
    """Multi-head self-attention with rotary position embeddings and a key padding mask."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0 and (dim // heads) % 2 == 0, "head size must be even"
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h, mask):
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q), rotary(k)
        attn_mask = mask.transpose(1, 2).unsqueeze(1) > 0.5  # [B, 1, 1, T]: which keys exist
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


# ---------------------------------------------------------------- helpers

def rotary(x):
    """Rotates channel pairs of x [B, heads, T, d] by position-dependent angles."""
    T, d = x.shape[2], x.shape[3]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


def timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    emb = torch.cat([ang.cos(), ang.sin()], -1)
    return F.pad(emb, (0, dim % 2))


def sequence_mask(lengths, max_len: int):
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


def gaussian_log_likelihood(mu_x, y):
    """log N(y_j; mu_i, I) for every token i and frame j: [B, Tx, Ty]."""
    n = mu_x.shape[1]
    const = -0.5 * math.log(2 * math.pi) * n
    return (const - 0.5 * (mu_x ** 2).sum(1).unsqueeze(2) + torch.bmm(mu_x.transpose(1, 2), y)
            - 0.5 * (y ** 2).sum(1).unsqueeze(1))


def expand_path(durations, n_frames: int):
    """Integer durations [B, Tx] -> 0/1 alignment [B, Tx, n_frames]."""
    end = torch.cumsum(durations, 1)
    start = end - durations
    j = torch.arange(n_frames, device=durations.device)[None, None]
    return ((j >= start.unsqueeze(2)) & (j < end.unsqueeze(2))).float()


def random_slice(y, y_lens, lo: float, hi: float, generator=None):
    """A random window of lo..hi of each mel's length (the voice, not the words)."""
    B = y.shape[0]
    frac = lo + (hi - lo) * torch.rand(B, device=y.device, generator=generator)
    lens = torch.clamp((y_lens.float() * frac).long(), min=1)
    lens = torch.minimum(lens, y_lens)
    start = (torch.rand(B, device=y.device, generator=generator) * (y_lens - lens + 1).float()).long()
    L = int(lens.max())
    idx = (start[:, None] + torch.arange(L, device=y.device)[None]).clamp(max=y.shape[2] - 1)
    window = torch.gather(y, 2, idx.unsqueeze(1).expand(-1, y.shape[1], -1))
    mask = sequence_mask(lens, L).unsqueeze(1).to(y.dtype)
    return window * mask, mask
