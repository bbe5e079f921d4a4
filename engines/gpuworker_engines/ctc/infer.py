"""CTC log-probabilities for any number of clips of any length.

Clips are cut into windows of `chunk_seconds` overlapping by `stride_seconds` on
each side when longer than one window; each window keeps only the frames of its
middle, so the kept frames tile the clip. Windows are batched by total padded
audio (`batch_seconds`); on out-of-memory the batch is halved and retried. On
CUDA the model runs in bf16 (fp16 where bf16 is missing).
"""
import math

import numpy as np
import torch

from .. import events
from . import SAMPLE_RATE
from .audio import featurize, load_audio, output_lengths
from .config import Inference as Options  # batch_seconds, chunk_seconds, ... and their defaults

GROUP = 64  # clips read into memory (and decoded) at a time


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class Transcriber:
    def __init__(self, model, fe, device, opts: Options):
        self.device = torch.device(device)
        self.dtype = inference_dtype(opts.precision, self.device)
        self.model = model.to(self.device, self.dtype).eval()
        self.fe, self.opts = fe, opts
        probe = featurize(fe, [np.zeros(10 * SAMPLE_RATE, dtype=np.float32)])
        frames = int(output_lengths(self.model, probe["attention_mask"])[0])
        self.hop = max(1, round(10 * SAMPLE_RATE / frames))  # samples per output frame
        # windows on the frame grid, so neighbouring windows' frames line up exactly
        self.window = max(1, round(opts.chunk_seconds * SAMPLE_RATE / self.hop)) * self.hop
        self.stride = round(opts.stride_seconds * SAMPLE_RATE / self.hop) * self.hop
        self.batch_samples = int(opts.batch_seconds * SAMPLE_RATE)

    def windows(self, n: int) -> list[tuple[int, int, int, int]]:
        """(start, end, keep_from, keep_to) sample offsets of each window of a clip of n samples."""
        if n <= self.window:
            return [(0, n, 0, n)]
        out, start, step = [], 0, self.window - 2 * self.stride
        while True:
            end = min(start + self.window, n)
            last = end == n
            out.append((start, end, start + self.stride if out else 0, end if last else end - self.stride))
            if last:
                return out
            start += step

    def logprobs(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Per clip, [frames, vocab] float32 log-probabilities."""
        units = [(c, *w) for c, wave in enumerate(waves) for w in self.windows(len(wave))]
        order = sorted(range(len(units)), key=lambda u: -(units[u][2] - units[u][1]))
        kept = [None] * len(units)
        i = 0
        while i < len(order):
            longest = units[order[i]][2] - units[order[i]][1]
            batch = order[i:i + max(1, self.batch_samples // max(1, longest))]
            try:
                outs = self._forward([waves[units[u][0]][units[u][1]:units[u][2]] for u in batch])
            except Exception as e:  # noqa: BLE001 - only out-of-memory is retried
                if not events.is_oom(e) or len(batch) == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.batch_samples = max(longest, self.batch_samples // 2)
                events.warning(f"out of memory transcribing {len(batch)} windows at once: batches now hold "
                               f"{self.batch_samples / SAMPLE_RATE:.0f}s of audio")
                continue
            for u, lp in zip(batch, outs):
                _, start, _, keep_from, keep_to = units[u]
                lo = math.ceil((keep_from - start) / self.hop)
                hi = math.ceil((keep_to - start) / self.hop)
                kept[u] = lp[lo:hi]
            i += len(batch)
        per_clip = [[] for _ in waves]
        for u, (c, *_rest) in enumerate(units):
            per_clip[c].append(kept[u])
        vocab = self.model.config.vocab_size
        return [np.concatenate(p) if p else np.zeros((0, vocab), np.float32) for p in per_clip]

    @torch.inference_mode()
    def _forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        batch = featurize(self.fe, waves)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in batch.items()}
        logits = self.model(**inputs).logits.float()
        lengths = output_lengths(self.model, inputs["attention_mask"]).cpu()
        lp = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return [lp[j, :lengths[j]] for j in range(len(waves))]

    def stream(self, paths: list[str]):
        """Yields (index, log-probabilities) for audio files, GROUP clips in memory at a time."""
        for s in range(0, len(paths), GROUP):
            waves = [load_audio(p) for p in paths[s:s + GROUP]]
            for j, lp in enumerate(self.logprobs(waves)):
                yield s + j, lp

    def all(self, paths: list[str]) -> list[np.ndarray]:
        out = [None] * len(paths)
        for i, lp in self.stream(paths):
            out[i] = lp
        return out
