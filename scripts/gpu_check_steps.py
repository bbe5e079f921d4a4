"""The steps of the GPU check (see gpu_check.py). Each takes the run's Context
and returns its figures, or raises with what it had measured in .figures."""
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    dry: bool
    work: Path
    worker: Path
    engine: Any  # gpu_check.engine
    steps_per_second: Any
    sampler: Any
    failed: Any  # the EngineFailed class
    data: Any  # gpu_check_data

    def size(self, full: str = "default") -> str:
        return "tiny" if self.dry else full

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"


def doctor(ctx: Context) -> dict:
    """gpu-worker doctor with real NVML, and its memory reading beside nvidia-smi's."""
    proj = ctx.work / "doctor-project"
    proj.mkdir(parents=True, exist_ok=True)
    args = [str(ctx.worker), "doctor", "--project-dir", str(proj), "--work-dir", str(ctx.work), "--min-free-disk", "1"]
    if ctx.dry:
        args.append("--allow-cpu")
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if "GPUs" in ln), "")
    figures = {"doctor_gpus": line.strip()[:200]}
    m = re.search(r"0: (.+?), (\d+) of (\d+) GiB free", line)
    if m:
        figures.update(gpu=m.group(1), worker_free_gib=int(m.group(2)), worker_total_gib=int(m.group(3)))
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[0]
        name, total, free, driver = [s.strip() for s in q.split(",")]
        figures.update(smi_gpu=name, smi_total_gib=round(int(total) / 1024, 1), smi_free_gib=round(int(free) / 1024, 1),
                       driver=driver)
        if m and abs(int(m.group(2)) - int(free) / 1024) > 2:
            raise Mismatch("the worker's free-memory reading differs from nvidia-smi's by more than 2 GiB", figures)
    elif not ctx.dry:
        raise Mismatch("nvidia-smi not found", figures)
    if "FAIL" in out.stdout and not ctx.dry:
        figures["doctor_failed_checks"] = [ln.strip() for ln in out.stdout.splitlines() if "FAIL" in ln][:6]
    return figures


class Mismatch(Exception):
    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def tts(ctx: Context) -> dict:
    """Published-size StableTTS: 200 fine-tuning steps (bf16 on CUDA), 50 verses synthesised."""
    w = ctx.work / "tts"
    rate = 16000 if ctx.dry else 44100
    ds = ctx.data.dataset(w / "dataset", 6 if ctx.dry else 96, 2.0 if ctx.dry else 6.0, rate)
    cfg = {"dataset": str(ds), "output_dir": str(w / "train"), "device": ctx.device, "size": ctx.size(),
           "epochs": 1000, "stop_at_step": 3 if ctx.dry else 200, "batch_size": 2 if ctx.dry else 16,
           "learning_rate": 1e-4, "warmup_steps": 10, "save_every_epochs": 1000, "progress_every_steps": 1 if ctx.dry else 10,
           "val_split": 0.1}
    vocoder = ""
    if not ctx.dry:
        cfg["base_checkpoint"] = str(ctx.data.published_tts(w / "checkpoint_0.pt"))
        vocoder = str(ctx.data.published_vocoder(w / "vocos.pt"))
    figures: dict = {}
    t0 = time.monotonic()
    try:
        with ctx.sampler() as s:
            res, events = ctx.engine("stabletts", "train", cfg, w, 900)
        figures.update(train_seconds=round(time.monotonic() - t0, 1), steps_per_s=ctx.steps_per_second(events),
                       **s.figures("train"))
        texts = ctx.data.text_dataset(w / "texts", 3 if ctx.dry else 50)
        model = res.get("final_model") or res.get("best_model")
        t1 = time.monotonic()
        with ctx.sampler() as s:
            syn, _ = ctx.engine("stabletts", "synthesize", {
                "checkpoint": model, "dataset": str(texts), "output_dir": str(w / "synth"), "device": ctx.device,
                "voice_reference": str(ds / "00000.wav"), "vocoder": vocoder, "solver": "euler", "steps": 10,
                "cfg_scale": 3.0, "batch_size": 8}, w, 900)
        figures.update(synth_seconds=round(time.monotonic() - t1, 1), synth_rtf=syn.get("rtf"),
                       synth_audio_s=syn.get("audio_seconds"), **s.figures("synth"))
    except Exception as e:
        e.figures = figures
        raise
    return figures


def asr(ctx: Context) -> dict:
    """Full-size W2V2-BERT (random weights): 200 steps with gradient checkpointing,
    then 100 clips transcribed greedy and with the language model."""
    w = ctx.work / "asr"
    base = ctx.data.w2v_bert_snapshot(w / "w2v-bert-2.0", full=not ctx.dry)
    # 200 items: 160 train after the validation and test splits, 20 steps an epoch at batch 8
    ds = ctx.data.dataset(w / "dataset", 8 if ctx.dry else 200, 2.0 if ctx.dry else 8.0, 16000, seed=1)
    corpus = w / "lm_corpus.jsonl"
    corpus.write_text("".join(json.dumps({"cell_id": f"x{i}", "text": v}) + "\n"
                              for i, v in enumerate(ctx.data.VERSES * 4)))
    cfg = {"dataset": str(ds), "output_dir": str(w / "train"), "device": ctx.device, "size": "default",
           "base_model": str(base), "architecture": "w2v2bert", "epochs": 1 if ctx.dry else 10,
           "batch_size": 2 if ctx.dry else 8,
           "gradient_accumulation_steps": 1, "learning_rate": 5e-5, "warmup_steps": 10,
           "gradient_checkpointing": True, "precision": "auto", "val_split": 0.1, "test_split": 0.1,
           "save_every_steps": 100000, "progress_every_steps": 1 if ctx.dry else 10,
           "transmorgrifier": {"enabled": False}, "lm": {"enabled": True, "order": 3}, "lm_corpus": str(corpus)}
    figures: dict = {}
    t0 = time.monotonic()
    try:
        with ctx.sampler() as s:
            res, events = ctx.engine("w2v2bert", "train", cfg, w, 1200)
        figures.update(train_seconds=round(time.monotonic() - t0, 1), steps_per_s=ctx.steps_per_second(events),
                       **s.figures("train"))
        clips = ctx.data.dataset(w / "clips", 4 if ctx.dry else 100, 2.0 if ctx.dry else 8.0, 16000, seed=2)
        for decoder in ("greedy", "lm"):
            t1 = time.monotonic()
            with ctx.sampler() as s:
                out, _ = ctx.engine("w2v2bert", "transcribe", {
                    "model": res["artifact"], "dataset": str(clips),
                    "device": ctx.device, "decoder": decoder, "batch_seconds": 240}, w, 900)
            figures.update({f"{decoder}_seconds": round(time.monotonic() - t1, 1), f"{decoder}_rtf": out.get("rtf"),
                            f"{decoder}_decoder_used": out.get("decoder"), **s.figures(decoder)})
    except Exception as e:
        e.figures = figures
        raise
    return figures


def oom(ctx: Context) -> dict:
    """A batch that cannot fit fails as "oom", as the worker's retry expects; half of
    it (the worker's first retry: half the batch, twice the accumulation) then runs.
    The dry run has no allocator to exhaust: it runs both calls and checks nothing
    about memory (the retry itself is tested in Go against a real engine process)."""
    w = ctx.work / "oom"
    ds = ctx.data.dataset(w / "dataset", 8 if ctx.dry else 256, 2.0 if ctx.dry else 30.0, 16000, seed=3)
    base = ctx.data.w2v_bert_snapshot(w / "w2v-bert-2.0", full=not ctx.dry) if not (ctx.work / "asr").exists() \
        else ctx.work / "asr" / "w2v-bert-2.0"
    big = 4 if ctx.dry else 256
    cfg = {"dataset": str(ds), "output_dir": str(w / "train"), "device": ctx.device, "size": "default",
           "base_model": str(base), "architecture": "w2v2bert", "epochs": 1,
           "gradient_checkpointing": False, "precision": "fp32", "val_split": 0.1, "test_split": 0.1,
           "learning_rate": 5e-5, "transmorgrifier": {"enabled": False}, "lm": {"enabled": False}}
    figures: dict = {"batch_tried": big}
    try:
        ctx.engine("w2v2bert", "train", {**cfg, "batch_size": big}, w, 900)
        figures["first_attempt"] = "fit"
    except ctx.failed as e:
        if e.kind != "oom":
            raise
        figures["first_attempt"] = "oom, reported as such"
    if not ctx.dry and figures["first_attempt"] != "oom, reported as such":
        raise Mismatch("the oversized batch did not run out of memory", figures)
    ctx.engine("w2v2bert", "train", {**cfg, "batch_size": big // 2, "gradient_accumulation_steps": 2,
                                      "output_dir": str(w / "train-half")}, w, 900)
    figures["retry_batch"] = big // 2
    return figures


def worker(ctx: Context) -> dict:
    """The whole worker on the local demo project: ASR and TTS training_and_inference."""
    built = os.environ.get("GPU_CHECK_DEMO_PROJECT", "")  # carried: no espeak-ng needed
    for tool in ("ffmpeg", "ffprobe") + (() if built else ("espeak-ng", "diatheke")):
        if not shutil.which(tool):
            raise Mismatch(f"{tool} is not on this machine; the worker step needs it", {})
    w = ctx.work / "worker"
    args = [str(ctx.worker.parent / "demo"), "--dir", str(w / "project"), "--work-dir", str(w / "work"),
            "--worker", str(ctx.worker)]
    if built:
        args += ["--project-from", built]
    if ctx.dry:
        args.append("--quick")
    else:
        tts_dir = ctx.work / "tts"
        args += ["--size", "default", "--", "--tts-base-model", str(tts_dir / "checkpoint_0.pt"),
                 "--tts-vocoder", str(tts_dir / "vocos.pt"), "--w2v2bert-base-model", str(ctx.work / "asr" / "w2v-bert-2.0")]
    t0 = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    (w / "demo.log").parent.mkdir(parents=True, exist_ok=True)
    (w / "demo.log").write_text(out.stdout + out.stderr)
    figures = {"wall_seconds": round(time.monotonic() - t0, 1)}
    for m in re.finditer(r"phase (\S+) took ([\d.]+) s", out.stdout):
        figures[f"{m.group(1)}_seconds"] = float(m.group(2))
    if out.returncode != 0:
        raise Mismatch(f"demo exited {out.returncode}: {(out.stderr or out.stdout)[-300:]}", figures)
    return figures


STEPS = {"doctor": doctor, "tts": tts, "asr": asr, "oom": oom, "worker": worker}
