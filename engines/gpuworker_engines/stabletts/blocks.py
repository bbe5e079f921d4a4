"""The transformer blocks the text encoder and the flow decoder share: a DiT block
(attention and a convolutional feed-forward, modulated by the speaker vector), its
rotary self-attention and the channel LayerNorm. Names are the published ones."""
import torch
import torch.nn.functional as F
from torch import nn


class DiTBlock(nn.Module):
    """Self-attention and a convolutional feed-forward, each after a LayerNorm modulated
    by the speaker vector (shift, scale) and added back through a gate; input and
    output masked."""

    def __init__(self, hidden, filters, heads, kernel, dropout, gin):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.attn = Attention(hidden, heads, dropout)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.mlp = ConvFeedForward(hidden, filters, kernel, dropout)
        self.adaLN_modulation = nn.Sequential(
            nn.Linear(gin, hidden) if gin != hidden else nn.Identity(), nn.SiLU(),
            nn.Linear(hidden, 6 * hidden))
        nn.init.zeros_(self.adaLN_modulation[2].weight)  # blocks start as the identity
        nn.init.zeros_(self.adaLN_modulation[2].bias)

    def forward(self, x, c, x_mask):
        x = x * x_mask
        pair_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(3)  # [b, 1, T, T]
        shift1, scale1, gate1, shift2, scale2, gate2 = \
            self.adaLN_modulation(c).unsqueeze(2).chunk(6, dim=1)
        x = x + gate1 * self.attn(channel_norm(self.norm1, x) * (1 + scale1) + shift1, pair_mask)
        x = x + gate2 * self.mlp(channel_norm(self.norm2, x) * (1 + scale2) + shift2, x_mask)
        return x * x_mask


class Attention(nn.Module):
    """Multi-head self-attention, 1x1 conv projections, rotary positions on the first
    half of each head's channels."""

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)

    def forward(self, x, pair_mask):
        b, ch, t = x.shape

        def heads(conv):
            return conv(x).view(b, self.heads, ch // self.heads, t).transpose(2, 3)

        q, k, v = rotary(heads(self.conv_q)), rotary(heads(self.conv_k)), heads(self.conv_v)
        bias = torch.zeros_like(pair_mask, dtype=q.dtype).masked_fill(
            pair_mask < 0.5, -torch.finfo(q.dtype).max)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.conv_o(out.transpose(2, 3).reshape(b, ch, t))


class ConvFeedForward(nn.Module):
    def __init__(self, channels: int, filters: int, kernel: int, dropout: float):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filters, kernel, padding=kernel // 2)
        self.conv_2 = nn.Conv1d(filters, channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        x = self.drop(F.silu(self.conv_1(x * mask)))
        return self.conv_2(x * mask) * mask


def rotary(x):
    """Rotary positions (base 10000) on the first half of each head's channels of
    x [b, heads, T, head_dim]; inside that part channel i turns with channel i + part/2.
    The second half passes unchanged."""
    t, d = x.shape[2], x.shape[3] // 2
    theta = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device).float() / d))
    angles = torch.arange(t, device=x.device).float()[:, None] * theta[None]
    angles = torch.cat([angles, angles], dim=1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    rot, keep = x[..., :d], x[..., d:]
    turned = torch.cat([-rot[..., d // 2:], rot[..., :d // 2]], dim=-1)
    return torch.cat([rot * cos + turned * sin, keep], dim=-1)


def channel_norm(norm: nn.LayerNorm, x):
    """A LayerNorm over the channels of [b, C, T]."""
    return norm(x.transpose(1, 2)).transpose(1, 2)
