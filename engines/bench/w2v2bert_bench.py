"""ASR engine benchmarks, from engines/:

    python bench/w2v2bert_bench.py [--what sizes,rtf,corrector,train] [--device cpu|cuda]
                                   [--pairs 400,4000] [--cap 1000] [--threads 2]

sizes      checkpoint sizes of the full-size architectures (W2V2-BERT 2.0, MMS-1B with
           adapters), counted on the meta device; the tiny model's real files for the ratio
rtf        transcription real-time factor, greedy vs LM beam search, on a tiny model trained
           here on espeak-ng speech (decoding cost depends on how peaked the outputs are, so a
           trained model is used); plus the full-size W2V2-BERT forward pass on random weights
corrector  post-correction training time and held-out CER on generated verse pairs
train      full-size W2V2-BERT training steps/s and peak memory on random weights (GPU)
One JSON object per line on stdout.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from gpuworker_engines import events  # noqa: E402
from gpuworker_engines.ctc import SAMPLE_RATE, checkpoints, corrector, infer, lm, scoring, text  # noqa: E402
from gpuworker_engines.ctc.decode import Beam, Greedy, Labels  # noqa: E402


def out(**row) -> None:
    print(json.dumps(row), flush=True)


def bench_sizes() -> None:
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC, Wav2Vec2Config, Wav2Vec2ForCTC
    with torch.device("meta"):
        w2v = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(vocab_size=64, add_adapter=True))
        mms = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=64, hidden_size=1280, num_hidden_layers=48,
                                            num_attention_heads=16, intermediate_size=5120, adapter_attn_dim=16,
                                            do_stable_layer_norm=True, feat_extract_norm="layer",
                                            conv_bias=True))
    out(bench="checkpoint_sizes", model="w2v-bert-2.0 (full fine-tuning)", **checkpoints.sizes(w2v))
    mms.freeze_base_model()
    for p in mms._get_adapters().values():
        p.requires_grad = True
    out(bench="checkpoint_sizes", model="mms-1b-all (adapter + head)", **checkpoints.sizes(mms, trainable_only=True),
        base_bytes=checkpoints.sizes(mms)["portable_bytes"])


def _speech(tmp: str, n: int) -> str:
    from asr_common import PHRASES, speech_dataset
    return speech_dataset(os.path.join(tmp, "speech"), (PHRASES * 2)[:n])


def bench_rtf(device: str) -> None:
    from gpuworker_engines.w2v2bert.model import load_trained
    from gpuworker_engines.w2v2bert.train import train
    from asr_common import tiny_config
    with tempfile.TemporaryDirectory() as tmp:
        ds = _speech(tmp, 40)
        events.emit = lambda *_a, **_k: None  # the training run's own events are not benchmark rows
        res = train(tiny_config(ds, os.path.join(tmp, "out"), epochs=20, batch_size=8, val_split=0.1, test_split=0,
                                device=device, lm={"enabled": True, "order": 4}), events.StopFlag())
        best = os.path.join(tmp, "out", "best")
        model, fe, tok = load_trained(best, device)
        labels = Labels(tok.get_vocab())
        from gpuworker_engines import dataset
        paths = [i.audio for i in dataset.load(ds)]
        audio_s = sum(len(__import__("soundfile").read(p)[0]) for p in paths) / SAMPLE_RATE
        tr = infer.Transcriber(model, fe, device, infer.Options())
        tr.all(paths[:4])  # warm-up
        t0 = time.perf_counter()
        lps = tr.all(paths)
        forward_s = time.perf_counter() - t0
        decoder = lm.load(best, labels)
        for name, dec in [("greedy", Greedy(labels)), ("lm", Beam(decoder, labels, 64) if decoder else None)]:
            if dec is None:
                continue
            t0 = time.perf_counter()
            hyps = dec(lps)
            decode_s = time.perf_counter() - t0
            refs = [text.normalize(i.text) for i in dataset.load(ds)]
            out(bench="transcription_rtf", model="tiny w2v2bert (trained here)", device=device, decoder=name,
                audio_s=round(audio_s, 1), forward_rtf=round(forward_s / audio_s, 5),
                decode_rtf=round(decode_s / audio_s, 5), total_rtf=round((forward_s + decode_s) / audio_s, 5),
                train_set_cer=round(scoring.cer(hyps, refs), 4), lm_kept=res["lm"]["kept"])
        del model
        from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC
        from gpuworker_engines.ctc.tinyhub import feature_extractor
        torch.manual_seed(0)
        big = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(vocab_size=len(labels.tokens), add_adapter=True))
        tr = infer.Transcriber(big, feature_extractor("w2v2bert"), device, infer.Options())
        few = paths[:8] if device == "cuda" else paths[:3]
        tr.all(few[:1])
        t0 = time.perf_counter()
        tr.all(few)
        if device == "cuda":
            torch.cuda.synchronize()
        s = sum(len(__import__("soundfile").read(p)[0]) for p in few) / SAMPLE_RATE
        out(bench="transcription_rtf", model="w2v-bert-2.0 shape (random)", device=device,
            precision=str(tr.dtype), audio_s=round(s, 1), forward_rtf=round((time.perf_counter() - t0) / s, 4))


def bench_corrector(sizes: list[int], cap: int, threads: int, device: str) -> None:
    from pairs import make_pairs
    for n in sizes:
        pairs = make_pairs(n + 80, seed=1)
        train_p, val_p, test_p = pairs[:n], pairs[n:n + 40], pairs[n + 40:]
        opts = corrector.Options(iterations=cap, threads=threads, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = corrector.train(train_p, val_p, opts, os.path.join(tmp, corrector.FILENAME), events.StopFlag())
            seconds = time.perf_counter() - t0
            tm = corrector.load(tmp)
            t0 = time.perf_counter()
            fixed = corrector.apply(tm, [a for a, _ in test_p])
            apply_s = time.perf_counter() - t0
        out(bench="post_correction", pairs=n, iteration_cap=cap, early_stopping_rounds=opts.early_stopping_rounds,
            seconds=round(seconds, 1), device=summary["device"], threads=threads,
            trees={k: summary[k]["trees"] for k in ("action", "char") if k in summary},
            rows={k: summary[k]["rows"] for k in ("action", "char") if k in summary},
            held_out_cer_before=round(scoring.cer([a for a, _ in test_p], [b for _, b in test_p]), 4),
            held_out_cer_after=round(scoring.cer(fixed, [b for _, b in test_p]), 4),
            apply_s_per_verse=round(apply_s / len(test_p), 3))


def bench_train(device: str, steps: int) -> None:
    """Full-size W2V2-BERT steps in bf16 with gradient checkpointing (the GPU recipe)."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC
    torch.manual_seed(0)
    model = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(vocab_size=64, add_adapter=True, ctc_zero_infinity=True,
                                                  ctc_loss_reduction="mean", layerdrop=0.0)).to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    batch, frames = 16, 500  # 16 clips of 10 s: 500 stacked fbank frames each
    x = torch.randn(batch, frames, 160, device=device)
    mask = torch.ones(batch, frames, dtype=torch.long, device=device)
    labels = torch.randint(3, 64, (batch, 120), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_features=x, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out(bench="train_steps", model="w2v-bert-2.0 shape (random)", device=device, batch=batch, clip_s=10,
        steps=steps, steps_per_s=round(1 / float(np.mean(times[2:])), 3),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="sizes,rtf,corrector")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", default="400,4000")
    ap.add_argument("--cap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    what = args.what.split(",")
    if "sizes" in what:
        bench_sizes()
    if "rtf" in what:
        bench_rtf(args.device)
    if "corrector" in what:
        bench_corrector([int(x) for x in args.pairs.split(",")], args.cap, args.threads,
                        "gpu" if args.device == "cuda" else "cpu")
    if "train" in what:
        bench_train(args.device, args.steps)


if __name__ == "__main__":
    main()
