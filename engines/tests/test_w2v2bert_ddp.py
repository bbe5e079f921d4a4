"""Two processes (torchrun, gloo on the CPU): the recipe of one process, and with dropout and
layer drop, layers skipped on one rank and not the other must not stall gradient reduction."""
import json
import os
import subprocess
import sys

import pytest

from asr_common import ENGINES, engine_env, speech_dataset, tiny_config


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    from asr_common import PHRASES
    return speech_dataset(str(tmp_path_factory.mktemp("speech")), PHRASES[:8])


def train(processes: int, config: dict, tmp) -> tuple[dict, list[dict]]:
    """(result, events) of a training run in `processes` CPU processes (1: no torchrun)."""
    path = tmp / f"config-{processes}.json"
    path.write_text(json.dumps(config))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else []
    proc = subprocess.run([sys.executable, *launcher, "-m", "gpuworker_engines", "w2v2bert", "train",
                           "--config", str(path)], cwd=ENGINES, env=engine_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    results = [e for e in evs if e["event"] == "result"]
    assert len(results) == 1  # rank 1 stays silent on stdout
    return results[0], evs


def test_two_processes_take_the_recipe_of_one(speech, tmp_path):
    # 8 items in batches of 2, two micro-batches a step: 2 optimizer steps an epoch on 1 or 2 processes
    cfg = tiny_config(speech, str(tmp_path / "one"), epochs=2, batch_size=2, gradient_accumulation_steps=2,
                      warmup_steps=2, warmup_max_fraction=0.5, seed=3)
    one, ev_one = train(1, cfg, tmp_path)
    two, ev_two = train(2, {**cfg, "output_dir": str(tmp_path / "two")}, tmp_path)
    hp1, hp2 = one["hyperparameters"], two["hyperparameters"]
    assert hp1 == {**hp2, "accumulation_per_process": 2, "processes": 1}
    assert (hp2["gradient_accumulation_steps"], hp2["accumulation_per_process"], hp2["processes"]) == (2, 1, 2)
    for hp in (hp1, hp2):
        assert (hp["batch_size"], hp["effective_batch"], hp["steps_per_epoch"], hp["total_steps"],
                hp["learning_rate"], hp["warmup_steps"], hp["warmup_steps_used"]) == (2, 4, 2, 4, 3e-3, 2, 2)
    a = {e["step"]: e for e in ev_one if e["event"] == "progress" and "lr" in e}
    b = {e["step"]: e for e in ev_two if e["event"] == "progress" and "lr" in e}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert [a[s]["lr"] for s in a] == [b[s]["lr"] for s in a]  # the same learning rate at every step
    for s in a:  # the same micro-batches and seeds: the same losses
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5), s


def test_ddp_two_processes_with_layerdrop_and_dropout(speech, tmp_path):
    cfg_path = tmp_path / "config.json"
    out = tmp_path / "out"
    # layer drop 0.5 over 2 layers: on most steps the ranks skip different layers
    cfg_path.write_text(json.dumps(tiny_config(speech, str(out), epochs=3, batch_size=2, layerdrop=0.5,
                                               dropout=0.1, mask_time_prob=0.05, seed=3)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "gpuworker_engines", "w2v2bert", "train", "--config", str(cfg_path)],
                          cwd=ENGINES, env=engine_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    # 8 items in batches of 2 = 4 batches, 2 per rank: 2 optimiser steps per epoch, each reported once
    assert [e["step"] for e in evs if e["event"] == "progress" and "lr" in e] == [1, 2, 3, 4, 5, 6]
    results = [e for e in evs if e["event"] == "result"]
    assert len(results) == 1 and os.path.exists(results[0]["artifact"])
    hp = results[0]["hyperparameters"]
    assert (hp["layerdrop"], hp["dropout"], hp["processes"], hp["effective_batch"]) == (0.5, 0.1, 2, 4)


def test_a_resume_on_another_process_count_goes_on_at_the_next_micro_batch(speech, tmp_path):
    import torch
    # 8 batches of 1, 3 micro-batches a step: on 2 processes each takes 2, so a step holds 4
    cfg = tiny_config(speech, str(tmp_path / "two"), epochs=1, batch_size=1, gradient_accumulation_steps=3,
                      save_every_steps=1, keep_checkpoints=10, seed=3)
    _, ev_two = train(2, cfg, tmp_path)
    first = next(e for e in ev_two if e["event"] == "checkpoint" and e["kind"] == "resumable" and e["step"] == 1)
    state = torch.load(first["path"], weights_only=True)
    assert state["batch_pos"] == 4
    # on one process a step holds 3: micro-batches 0-3 are done, so the run goes on with the step of 6 and 7
    one, ev_one = train(1, {**cfg, "output_dir": str(tmp_path / "one"), "resume": first["path"]}, tmp_path)
    assert [e["step"] for e in ev_one if e["event"] == "progress" and "lr" in e] == [2]
    assert one["hyperparameters"]["steps_per_epoch"] == 3
    # a checkpoint written before the position was kept in micro-batches counted optimizer steps of
    # the job's accumulation: it still resumes, from micro-batch 3
    older = {k: v for k, v in state.items() if k != "batch_pos"}
    torch.save({**older, "group": 1}, tmp_path / "older.pt")
    _, ev_older = train(1, {**cfg, "output_dir": str(tmp_path / "older"), "resume": str(tmp_path / "older.pt")},
                        tmp_path)
    assert [e["step"] for e in ev_older if e["event"] == "progress" and "lr" in e] == [2, 3]
