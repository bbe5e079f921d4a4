"""One run that proves every GPU path and leaves its figures in a folder.

    python3 scripts/gpu_check.py --out DIR [--dry-run] [--only STEP,...]

Steps, each timed, each failure recorded without stopping the rest; the
figures are rewritten to DIR/gpu-check.json and DIR/gpu-check.md after every
step, so a run cut off keeps what it measured:

  doctor  gpu-worker doctor with real NVML, against nvidia-smi's reading
  tts     StableTTS at the published size: 200 training steps (bf16 on CUDA),
          then 50 verses through the vocoder; steps/s, RTF, peak memory, GPU busy %
  asr     W2V2-BERT at full size (random weights): 200 steps with gradient
          checkpointing, then 100 clips transcribed greedy and with the LM
  oom     a batch that does not fit fails as "oom"; half of it runs
  worker  the whole worker on a local demo project at default sizes, ASR and
          TTS training_and_inference end to end, wall time per phase

--dry-run runs the same steps on the CPU at tiny sizes and a few steps, so the
script cannot rot between the rare runs on a GPU (`make test` runs it).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ROOT / "engines"
sys.path.insert(0, str(ENGINES))
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check_data as data  # noqa: E402


class Report:
    """The figures so far, written after every step."""

    def __init__(self, out: Path, dry: bool):
        self.out, self.rows = out, []
        self.meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": dry,
                     "python": sys.version.split()[0]}

    def add(self, step: str, ok: bool, seconds: float, figures: dict, error: str = ""):
        self.rows.append({"step": step, "ok": ok, "seconds": round(seconds, 1), "figures": figures, "error": error})
        self.write()

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {**self.meta, "steps": self.rows}
        _atomic(self.out / "gpu-check.json", json.dumps(doc, indent=2, default=str) + "\n")
        lines = ["# GPU check", "", f"started {self.meta['started']}, dry run: {self.meta['dry_run']}", "",
                 "| step | ok | seconds | figures | error |", "| --- | --- | --- | --- | --- |"]
        for r in self.rows:
            figs = "; ".join(f"{k} {v}" for k, v in r["figures"].items())
            lines.append(f"| {r['step']} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | {figs} | {r['error'][:300]} |")
        _atomic(self.out / "gpu-check.md", "\n".join(lines) + "\n")


def _atomic(path: Path, text: str):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Sampler:
    """GPU busy % and used memory through NVML every half second (no-op without it)."""

    def __init__(self):
        self.util, self.mem, self._stop = [], [], threading.Event()
        try:
            import pynvml
            pynvml.nvmlInit()
            self._nvml, self._h = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no driver, no library: nothing to sample
            self._nvml = None

    def __enter__(self):
        if self._nvml:
            threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self):
        while not self._stop.wait(0.5):
            self.util.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)
            self.mem.append(self._nvml.nvmlDeviceGetMemoryInfo(self._h).used)

    def __exit__(self, *exc):
        self._stop.set()

    def figures(self, prefix: str) -> dict:
        if not self.util:
            return {f"{prefix}_gpu_busy_pct": "n/a (no NVML)"}
        return {f"{prefix}_gpu_busy_pct": round(sum(self.util) / len(self.util), 1),
                f"{prefix}_gpu_mem_peak_gib": round(max(self.mem) / 2**30, 2)}


def engine(name: str, command: str, config: dict, work: Path, timeout: float) -> tuple[dict, list[dict]]:
    """Runs one engine command; returns its result and its events (with arrival times)."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / f"{name}-{command}.json"
    cfg.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENGINES), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    log = open(work / f"{name}-{command}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gpuworker_engines", name, command, "--config", str(cfg)],
                            cwd=ENGINES, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    events, result, error = [], None, None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        ev["_t"] = time.monotonic()
        events.append(ev)
        if ev.get("event") == "result":
            result = ev
        elif ev.get("event") == "error":
            error = ev
    code = proc.wait()
    timer.cancel()
    log.close()
    if code != 0:
        raise EngineFailed(f"{name} {command} exited {code}: {(error or {}).get('message', 'see its log')}",
                           (error or {}).get("kind"))
    return result or {}, events


class EngineFailed(Exception):
    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


def steps_per_second(events: list[dict]) -> float | None:
    """From the progress events: steps between the first and last report over the time between them."""
    prog = [e for e in events if e.get("event") == "progress" and e.get("step")]
    if len(prog) < 2 or prog[-1]["_t"] <= prog[0]["_t"]:
        return None
    return round((prog[-1]["step"] - prog[0]["step"]) / (prog[-1]["_t"] - prog[0]["_t"]), 3)


def run_step(report: Report, name: str, fn, *args):
    t0 = time.monotonic()
    try:
        figures = fn(*args)
        report.add(name, True, time.monotonic() - t0, figures)
    except Exception as e:  # noqa: BLE001 - a failed step is a figure too; the next one runs
        report.add(name, False, time.monotonic() - t0, getattr(e, "figures", {}), f"{type(e).__name__}: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, a few steps, no NVML")
    ap.add_argument("--only", default="", help="comma-separated steps to run (default: all)")
    ap.add_argument("--worker", default=str(ROOT / "bin" / "gpu-worker"), help="the gpu-worker binary")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    work = out / "work"
    report = Report(out, args.dry_run)
    import gpu_check_steps as steps  # noqa: E402 - after sys.path is set
    ctx = steps.Context(dry=args.dry_run, work=work, worker=Path(args.worker), engine=engine,
                        steps_per_second=steps_per_second, sampler=Sampler, failed=EngineFailed, data=data)
    chosen = [s for s in args.only.split(",") if s] or list(steps.STEPS)
    for name in chosen:
        run_step(report, name, steps.STEPS[name], ctx)
    report.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.write()
    failed = [r["step"] for r in report.rows if not r["ok"]]
    print(f"gpu check: {len(report.rows) - len(failed)} of {len(report.rows)} steps passed; figures in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
