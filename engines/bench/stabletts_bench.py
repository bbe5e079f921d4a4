"""StableTTS engine speed at the published config: training steps/s and synthesis
real-time factor (with the published-size Vocos).

    python engines/bench/stabletts_bench.py [--sizes default tiny] [--device cpu|cuda]
        [--batch N] [--seconds S] [--bf16] [--threads N] [--solver euler|midpoint]

Inputs are random (utterances of --seconds of audio with a matching text length),
so the figures measure the model, not data loading. A training step is the
engine's: reference windows, MAS, the three losses, AdamW. RTF = wall time /
seconds of audio produced (below 1 is faster than real time). The weights are
untrained, so an adaptive solver (dopri5) would take unrepresentative steps:
fixed-step solvers only.
"""
import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gpuworker_engines.stabletts import data  # noqa: E402
from gpuworker_engines.stabletts.config import ModelConfig  # noqa: E402
from gpuworker_engines.stabletts.frontend import PUBLISHED_SYMBOLS  # noqa: E402
from gpuworker_engines.stabletts.model import StableTTS  # noqa: E402
from gpuworker_engines.stabletts.vocoder import GriffinLim, Vocos  # noqa: E402

TOKENS_PER_SECOND = 30  # IPA characters with interspersed blanks, about 15 characters/s


def batch(cfg: ModelConfig, n: int, seconds: float, device):
    frames = int(seconds * cfg.sample_rate / cfg.hop_length)
    tokens = int(seconds * TOKENS_PER_SECOND)
    x = torch.randint(1, len(PUBLISHED_SYMBOLS), (n, tokens), device=device)
    y = torch.randn(n, cfg.n_mels, frames, device=device) * 2 - 6
    return x, torch.full((n,), tokens, device=device), y, torch.full((n,), frames, device=device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(model, cfg, args, device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else nullcontext()
    x, xl, y, yl = batch(cfg, args.batch, args.seconds, device)
    model.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        ref, rl = data.style_windows(y, yl)
        with amp:
            loss = sum(model(x, xl, y, yl, ref, rl).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    sync(device)
    return args.steps / (time.perf_counter() - t0)


def bench_synth(model, vocoder, cfg, args, device) -> dict:
    model.eval()
    x, xl, y, _ = batch(cfg, 1, args.seconds, device)
    with torch.no_grad():  # untrained: set the speaking rate so the audio has the intended length
        per_token = cfg.sample_rate / cfg.hop_length / TOKENS_PER_SECOND
        model.dp.proj.bias.fill_(math.log(max(per_token - 0.5, 0.5)))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else nullcontext()
    out = {}
    for _ in range(2):  # the first pass warms up
        sync(device)
        t0 = time.perf_counter()
        with amp:
            res = model.synthesise(x, xl, y[:, :, :260], steps=10, cfg_scale=3.0,
                                   solver=args.solver)
        sync(device)
        t_model = time.perf_counter() - t0
        audio_s = int(res["mel_lengths"][0]) * cfg.hop_length / cfg.sample_rate
        t1 = time.perf_counter()
        with torch.no_grad():
            vocoder(res["mel"].float())
        sync(device)
        out = {"audio_s": round(audio_s, 2), "rtf_acoustic": round(t_model / audio_s, 4),
               "rtf_with_vocoder": round((t_model + time.perf_counter() - t1) / audio_s, 4)}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["default"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    for size in args.sizes:
        cfg = ModelConfig.tiny() if size == "tiny" else ModelConfig.published()
        model = StableTTS(cfg, len(PUBLISHED_SYMBOLS)).to(device)
        vocoder = (GriffinLim(cfg) if size == "tiny" else Vocos()).to(device).eval()
        row = {"size": size, "device": args.device, "params": sum(q.numel() for q in model.parameters()),
               "vocoder": type(vocoder).__name__, "batch": args.batch, "utterance_s": args.seconds,
               "bf16": args.bf16, "threads": args.threads, "solver": args.solver,
               "steps_ode": 10, "cfg_scale": 3.0}
        row["train_steps_per_s"] = round(bench_train(model, cfg, args, device), 4)
        row.update(bench_synth(model, vocoder, cfg, args, device))
        if device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
