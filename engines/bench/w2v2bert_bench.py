"""ASR engine benchmark: training steps/s and transcription real-time factor.

Randomly initialised models (tiny test config and the full-size W2V2-BERT 2.0
shape, ~580M params) on espeak-ng speech. Usage, from engines/:
    python bench/w2v2bert_bench.py [--sizes tiny,default] [--device cpu|cuda] [--steps N]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpuworker_engines.w2v2bert import SAMPLE_RATE  # noqa: E402
from gpuworker_engines.w2v2bert.model import (CLASSES, default_feature_extractor, featurize,  # noqa: E402
                                              tiny_config, tokenizer_from_vocab)
from gpuworker_engines.w2v2bert.transcribe import greedy  # noqa: E402
from gpuworker_engines.w2v2bert.vocab import build, save  # noqa: E402
from transformers import Wav2Vec2BertConfig  # noqa: E402

PHRASES = ["in the beginning was the word", "and the word was with god",
           "the light shines in the darkness", "there was a man sent from god whose name was john",
           "he came as a witness to testify concerning that light", "the true light was coming into the world",
           "he was in the world and the world was made through him", "grace and truth came through jesus christ"]


def speech(tmp: str) -> list[np.ndarray]:
    waves = []
    for i, p in enumerate(PHRASES):
        path = os.path.join(tmp, f"{i}.wav")
        subprocess.run(["espeak-ng", "-w", path, p], check=True, capture_output=True)
        wav, sr = sf.read(path, dtype="float32")
        g = math.gcd(sr, SAMPLE_RATE)
        waves.append(resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32))
    return waves


def build_model(size: str, vocab_size: int):
    if size == "tiny":
        conf = tiny_config("w2v2bert", vocab_size, add_adapter=True)
    else:  # the facebook/w2v-bert-2.0 shape with the fine-tuning recipe's head
        conf = Wav2Vec2BertConfig(vocab_size=vocab_size, add_adapter=True, layerdrop=0.0,
                                  mask_time_prob=0.0, ctc_loss_reduction="mean", ctc_zero_infinity=True)
    return CLASSES["w2v2bert"](conf)


def bench(size: str, waves, tok, device: str, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = build_model(size, len(tok)).to(device)
    fe = default_feature_extractor("w2v2bert")
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    texts = PHRASES[:batch]
    inputs = {k: v.to(device) for k, v in featurize(fe, "w2v2bert", waves[:batch]).items()}
    labels = torch.nn.utils.rnn.pad_sequence([torch.tensor(tok(t).input_ids) for t in texts],
                                             batch_first=True, padding_value=-100).to(device)
    amp = device == "cuda"
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step warms up kernels and allocator
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = float(np.mean(times[1:]))
    del opt
    audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
    greedy(model, fe, tok, "w2v2bert", waves[:2], batch_size=2, device=device)  # warm-up
    t0 = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
        greedy(model, fe, tok, "w2v2bert", waves, batch_size=4, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    rtf = (time.perf_counter() - t0) / audio_s
    return {"size": size, "device": device, "params_m": round(params / 1e6, 2), "train_batch": batch,
            "train_clip_s": round(sum(len(w) for w in waves[:batch]) / SAMPLE_RATE / batch, 2),
            "train_steps_per_s": round(1 / step_s, 3), "transcribe_audio_s": round(audio_s, 1),
            "transcribe_rtf": round(rtf, 4), "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,default")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 10 tiny, 2 default)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        waves = speech(tmp)
        vocab, _ = build(PHRASES)
        save(vocab, os.path.join(tmp, "vocab.json"))
        tok = tokenizer_from_vocab(os.path.join(tmp, "vocab.json"))
        for size in args.sizes.split(","):
            steps = args.steps or (10 if size == "tiny" else 2)
            batch = 8 if size == "tiny" else (4 if args.device == "cuda" else 1)
            print(json.dumps(bench(size, waves, tok, args.device, steps, batch)), flush=True)


if __name__ == "__main__":
    main()
