"""StableTTS engine speed: training steps/s and synthesis real-time factor.

    python engines/bench/stabletts_bench.py [--sizes tiny default] [--device cpu|cuda]
        [--batch N] [--bf16] [--threads N]

Inputs are random (utterances of --seconds of audio with a matching text
length), so the figures measure the model, not data loading. RTF = wall time
/ seconds of audio produced (below 1 is faster than real time).
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
from gpuworker_engines.stabletts.config import ModelConfig  # noqa: E402
from gpuworker_engines.stabletts.model import StableTTS  # noqa: E402
from gpuworker_engines.stabletts.vocoder import GriffinLim, Vocos  # noqa: E402

N_SYMBOLS = 60
TOKENS_PER_SECOND = 25  # graphemes with interspersed blanks, about 12 characters/s


def batch(cfg: ModelConfig, n: int, seconds: float, device):
    frames = int(seconds * cfg.sample_rate / cfg.hop_length)
    tokens = int(seconds * TOKENS_PER_SECOND)
    x = torch.randint(1, N_SYMBOLS, (n, tokens), device=device)
    y = torch.randn(n, cfg.n_mels, frames, device=device) * 2 - 5
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
        with amp:
            loss = sum(model(x, xl, y, yl).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    sync(device)
    return args.steps / (time.perf_counter() - t0)


def bench_synth(model, cfg, args, device) -> dict:
    model.eval()
    x, xl, y, yl = batch(cfg, 1, args.seconds, device)
    with torch.no_grad():
        # untrained: set the speaking rate so the audio has the intended length
        model.duration_predictor.proj.bias.fill_(
            math.log(cfg.sample_rate / cfg.hop_length / TOKENS_PER_SECOND))
    vocoders = {"griffin_lim": GriffinLim(cfg).to(device),
                "vocos": Vocos(cfg.n_mels, 512, 1536, 8, cfg.n_fft, cfg.hop_length).to(device).eval()}
    out = {}
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else nullcontext()
    for rep in range(2):  # the first pass warms up
        sync(device)
        t0 = time.perf_counter()
        with amp:
            res = model.synthesize(x, xl, y[:, :, :200], yl.clamp(max=200), steps=10, cfg_scale=3.0)
        sync(device)
        t_model = time.perf_counter() - t0
        audio_s = int(res["mel_lens"][0]) * cfg.hop_length / cfg.sample_rate
        out = {"audio_s": round(audio_s, 2), "rtf_acoustic": round(t_model / audio_s, 4)}
        for name, voc in vocoders.items():
            t1 = time.perf_counter()
            with torch.no_grad():
                voc(res["mel"].float())
            sync(device)
            out[f"rtf_with_{name}"] = round((t_model + time.perf_counter() - t1) / audio_s, 4)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["tiny", "default"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    for size in args.sizes:
        cfg = ModelConfig.tiny() if size == "tiny" else ModelConfig.default()
        model = StableTTS(cfg, N_SYMBOLS).to(device)
        row = {"size": size, "device": args.device, "params_m": round(
            sum(q.numel() for q in model.parameters()) / 1e6, 2), "batch": args.batch,
            "utterance_s": args.seconds, "bf16": args.bf16, "threads": args.threads}
        row["train_steps_per_s"] = round(bench_train(model, cfg, args, device), 3)
        row.update(bench_synth(model, cfg, args, device))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
