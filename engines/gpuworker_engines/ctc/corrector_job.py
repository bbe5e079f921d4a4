"""The post-correction training step, run as its own process by corrector.py.

    python -m gpuworker_engines.ctc.corrector_job JOB.json

JOB.json: {"train": [[asr, true], ...], "val": [[asr, true], ...], "out": path,
"iterations", "early_stopping_rounds", "device", "context", "learning_rate",
"summary": path}. Trains SentenceTransmorgrifier's two catboost models (which
edit to make; which letter to insert) with early stopping on the validation
pairs, prints a summary line every tenth of the iteration cap, saves the
library's .tm file and a JSON summary. Without a signal handler of its own, a
SIGTERM ends it at once, even inside catboost.
"""
import contextlib
import io
import json
import os
import sys
import time

LOG_LINES_PER_MODEL = 10


def say(message: str) -> None:
    print(message, flush=True)


def parse(st, pairs, context: int, what: str):
    """The library's (features, labels) for pairs, with its chatter silenced."""
    xs, ys = [], []
    step = max(1, len(pairs) // 4)
    for s in range(0, len(pairs), step):
        chunk = pairs[s:s + step]
        with contextlib.redirect_stdout(io.StringIO()):
            x, y = st._parse_for_training([a for a, _ in chunk], [b for _, b in chunk],
                                          num_pre_context_chars=context, num_post_context_chars=context,
                                          randomize_edit_path=False)
        xs.append(x)
        ys.append(y)
        say(f"{what}: aligned {min(s + step, len(pairs))}/{len(pairs)} sentence pairs")
    import pandas as pd
    return pd.concat(xs).fillna(" ").reset_index(drop=True), pd.concat(ys).reset_index(drop=True)


def gpu_available() -> bool:
    try:
        from catboost.utils import get_gpu_device_count
        return get_gpu_device_count() > 0
    except Exception:  # noqa: BLE001
        return False


def fit(x, y, xv, yv, job: dict, name: str):
    from catboost import CatBoostClassifier, Pool

    cat = [i for i, c in enumerate(x.columns) if c[0] in "ftu"]  # the library's context columns
    cap = int(job["iterations"])
    params = dict(iterations=cap, learning_rate=float(job["learning_rate"]), allow_writing_files=False,
                  # one-hot splits on the context letters: about 15x faster per iteration than
                  # catboost's default target statistics on these features (0.035 s against
                  # 0.49 s on 400 verse pairs, 2 CPU threads)
                  one_hot_max_size=255, thread_count=job.get("threads") or -1)
    params.update(job.get("catboost") or {})
    if job["task_type"] == "GPU":
        params.update(task_type="GPU", devices=str(job.get("gpu", "0")))
    eval_set = None
    if xv is not None:
        known = yv.isin(set(y.unique()))  # catboost refuses labels it never trained on
        if known.any():
            eval_set = Pool(xv[known.values], yv[known.values], cat_features=cat)
            params.update(early_stopping_rounds=int(job["early_stopping_rounds"]), use_best_model=True)
    say(f"{name} model: {len(x)} rows, up to {cap} iterations"
        + (f", early stopping after {job['early_stopping_rounds']} without gain" if eval_set else ""))
    t0 = time.monotonic()
    try:
        model = _fit(CatBoostClassifier(**params), Pool(x, y, cat_features=cat), eval_set, cap)
    except Exception as e:  # noqa: BLE001 - a GPU catboost cannot use: carry on on the CPU
        if params.get("task_type") != "GPU":
            raise
        say(f"{name} model: catboost on the GPU failed ({e}); training on the CPU")
        params.pop("task_type"), params.pop("devices")
        job["task_type"] = "CPU"
        model = _fit(CatBoostClassifier(**params), Pool(x, y, cat_features=cat), eval_set, cap)
    done = model.tree_count_
    best = model.get_best_iteration()
    say(f"{name} model: {done} trees kept"
        + (f" (best iteration {best})" if best is not None and eval_set else "")
        + f", {time.monotonic() - t0:.1f}s")
    return model, {"trees": done, "best_iteration": best, "rows": len(x),
                   "seconds": round(time.monotonic() - t0, 2)}


def _fit(model, pool, eval_set, cap: int):
    model.fit(pool, eval_set=eval_set, verbose=max(1, cap // LOG_LINES_PER_MODEL), log_cout=sys.stdout,
              log_cerr=sys.stdout)
    return model


def main(path: str) -> int:
    t0 = time.monotonic()
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    from sentence_transmorgrifier import transmorgrify as st

    device = str(job.get("device", "auto")).lower()
    job["task_type"] = "GPU" if device in ("gpu", "cuda") or (device == "auto" and gpu_available()) else "CPU"
    context = int(job.get("context", 7))
    x, y = parse(st, job["train"], context, "training pairs")
    xv = yv = None
    if job.get("val"):
        xv, yv = parse(st, job["val"], context, "validation pairs")
    say(f"catboost on {job['task_type']}")
    summary = {}
    action, summary["action"] = fit(x, y["action"], xv, None if yv is None else yv["action"], job, "edit")
    inserts = y["action"] == st.INSERT_TO
    tm = st.Transmorgrifier()
    tm.action_model, tm.char_model, tm.constant_output = action, None, None
    if y["char"][inserts].nunique() > 1:
        vi = None if yv is None else (yv["action"] == st.INSERT_TO)
        tm.char_model, summary["char"] = fit(
            x[inserts.values], y["char"][inserts], None if vi is None else xv[vi.values],
            None if vi is None else yv["char"][vi], job, "letter")
    else:  # one letter (or none) is ever inserted: the library stores it as a constant
        chars = y["char"][inserts].unique()
        tm.constant_output = chars[0] if len(chars) else " "
    summary["device"] = job["task_type"]  # after any fall-back to the CPU
    tm.leading_context = tm.trailing_context = context
    tm.iterations = int(job["iterations"])
    tm.save(job["out"])
    summary["seconds"] = round(time.monotonic() - t0, 2)
    tmp = job["summary"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f)
    os.replace(tmp, job["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
