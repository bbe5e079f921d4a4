"""Two processes (torchrun, gloo on the CPU) with dropout and layer drop: layers skipped on one
rank and not the other must not stall gradient reduction."""
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
