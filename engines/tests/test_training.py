"""The trainers' shared pieces: the learning-rate schedules, how optimizer steps are made of
micro-batches on 1 or N processes, gradient accumulation, per-micro-batch seeds, progress."""
import contextlib
import io
import json

import pytest
import torch

from gpuworker_engines import training
from gpuworker_engines.training import Plan, lr_at


def test_cosine_schedule_is_a_pure_function_of_step():
    lrs = [lr_at(s, 1e-3, 10, 100, "cosine", 0.1) for s in range(100)]
    assert lrs == [lr_at(s, 1e-3, 10, 100, "cosine", 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(55, 1e-3, 10, 100, "cosine", 0.1) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(100, 1e-3, 10, 100, "cosine", 0.1) == pytest.approx(1e-4)


def test_linear_schedule_decays_to_zero():
    assert lr_at(0, 1.0, 10, 100, "linear") == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, "linear") == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100, "linear") == 0
    with pytest.raises(ValueError):
        lr_at(0, 1.0, 0, 10, "step")


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0, 2.0, 0, 100, "linear") == 2.0
    assert lr_at(0, 2.0, 0, 100, "cosine", 0.1) == 2.0
    assert lr_at(50, 2.0, 0, 100, "linear") == pytest.approx(1.0)


def test_plan_keeps_the_effective_batch_over_processes():
    assert (Plan(4, 4, 1).per_process, Plan(4, 4, 1).effective_batch) == (4, 16)
    assert (Plan(4, 4, 2).per_process, Plan(4, 4, 2).effective_batch) == (2, 16)
    assert (Plan(4, 4, 4).per_process, Plan(4, 4, 4).effective_batch) == (1, 16)
    # the accumulation not divisible by the processes: rounded up, and said so
    assert (Plan(4, 3, 2).per_process, Plan(4, 3, 2).effective_batch) == (2, 16)
    assert (Plan(4, 1, 2).per_process, Plan(4, 1, 2).effective_batch) == (1, 8)
    for n in (1, 2, 4):
        assert Plan(4, 4, n).steps(10) == 3
    hp = Plan(8, 4, 2).hyperparameters(n_batches=17, epochs=3)
    assert hp == {"batch_size": 8, "gradient_accumulation_steps": 4, "accumulation_per_process": 2,
                  "processes": 2, "effective_batch": 32, "steps_per_epoch": 5, "total_steps": 15}
    # rounded up: the job's accumulation reported as asked, what each process ran beside it
    hp = Plan(4, 3, 2).hyperparameters(n_batches=8, epochs=1)
    assert (hp["gradient_accumulation_steps"], hp["accumulation_per_process"], hp["effective_batch"]) == (3, 2, 16)


def test_shares_deal_each_step_to_the_processes():
    batches = [f"b{i}" for i in range(10)]
    one = Plan(1, 4, 1).shares(batches, 0)
    assert [[m.batch for m in s] for s in one] == [batches[0:4], batches[4:8], batches[8:10]]
    assert [m.weight for m in one[0]] == [0.25] * 4 and [m.weight for m in one[2]] == [0.5] * 2
    two = [Plan(1, 4, 2).shares(batches, r) for r in (0, 1)]
    assert [[m.batch for m in s] for s in two[0]] == [["b0", "b2"], ["b4", "b6"], ["b8"]]
    assert [[m.batch for m in s] for s in two[1]] == [["b1", "b3"], ["b5", "b7"], ["b9"]]
    for step in range(3):
        # the processes' micro-batches of a step are the one process's, each with its place
        mine = sorted((m.index, m.batch) for r in (0, 1) for m in two[r][step])
        assert mine == [(m.index, m.batch) for m in one[step]]
        # DDP averages over 2 processes: the weights then make the mean over the step
        assert sum(m.weight for r in (0, 1) for m in two[r][step]) / 2 == pytest.approx(1.0)


def test_a_process_without_a_micro_batch_joins_with_weight_zero():
    batches = list(range(9))
    last = [Plan(1, 4, 2).shares(batches, r)[-1] for r in (0, 1)]
    assert [(m.batch, m.weight) for m in last[0]] == [(8, 2.0)]
    assert [(m.batch, m.weight) for m in last[1]] == [(8, 0.0)]


def test_accumulation_gives_the_mean_gradient_of_the_step():
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randn(12)
    net = torch.nn.Linear(3, 1)

    def forward(idx):
        return {"mse": ((net(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()}

    plan = Plan(batch_size=3, accumulation=4)
    micro = plan.shares([list(range(i, i + 3)) for i in range(0, 12, 3)], 0)[0]
    losses = training.accumulate(net, micro, training.Processes(), forward, seed=1, step=0)
    got = net.weight.grad.clone()
    net.zero_grad()
    whole = forward(list(range(12)))["mse"]
    whole.backward()
    torch.testing.assert_close(got, net.weight.grad)
    assert losses["mse"] == pytest.approx(whole.item(), rel=1e-6)


def test_micro_batch_seeds_depend_on_step_and_place_only():
    draws = {}
    for step, index in ((3, 0), (3, 1), (4, 0), (3, 0)):
        training.seed_micro_batch(7, step, index)
        draws.setdefault((step, index), []).append(torch.rand(2))
    assert torch.equal(*draws[(3, 0)])
    assert not torch.equal(draws[(3, 0)][0], draws[(3, 1)][0])
    assert not torch.equal(draws[(3, 0)][0], draws[(4, 0)][0])


def test_progress_reports_every_step_due_and_each_epoch_end():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        p = training.Progress(epochs=2, total=4, done=0, every=2)
        for step in (1, 2, 3, 4):
            p.step(0, step, {"a": 1.0, "b": 0.5}, lr=0.1)
        p.epoch_end(1, 4, {"a": 1.0}, {"loss": 2.0})
        training.Progress(epochs=2, total=4, done=0, every=1, main=False).step(0, 1, {"a": 1.0}, 0.1)
    evs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["step"] for e in evs if "lr" in e] == [2, 4]
    assert evs[0] == {"event": "progress", "epoch": 1, "epochs": 2, "step": 2, "steps": 4, "loss": 1.5,
                      "losses": {"a": 1.0, "b": 0.5}, "lr": 0.1, "eta_s": evs[0]["eta_s"]}
    assert evs[-1]["val"] == {"loss": 2.0} and evs[-1]["epoch"] == 1 and len(evs) == 3
    assert training.fmt_eta(3725) == "1h02m" and training.fmt_eta(65) == "1m05s" and training.fmt_eta(None) == "?"


def test_one_device_choice_for_every_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training.pick_device("auto") == training.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(training.EngineError, match="device cuda requested but no GPU is available"):
        training.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training.pick_device("auto", 1) == torch.device("cuda", 1)
    assert training.pick_device("cpu") == torch.device("cpu")
