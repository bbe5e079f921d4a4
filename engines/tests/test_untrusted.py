"""The loaders for files that may come from a project: tensors, JSON and archives are read
as data; anything else is refused with the file's path, and nothing runs or lands outside."""
import json
import os
import random
import tarfile

import numpy as np
import pytest
import torch

from gpuworker_engines import checkpoint, untrusted
from gpuworker_engines.events import EngineError
from payloads import (RunsCommand, RunsPython, carries_code, hostile_tars, member, plant, tar_with,
                      zip_symlink, zip_with)


@pytest.fixture(autouse=True)
def default_limits():
    untrusted.configure({})
    yield
    untrusted.configure({})


def tree(folder) -> set[str]:
    return {os.path.relpath(os.path.join(r, n), folder) for r, ds, fs in os.walk(folder) for n in ds + fs}


@pytest.mark.parametrize("how", [RunsCommand, RunsPython])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_a_tensor_file_that_would_run_code_is_refused(tmp_path, how, legacy):
    marker = tmp_path / "ran"
    path = plant(tmp_path / "resume.pt", marker, {"model": {"w": torch.zeros(2)}}, how, legacy)
    if not legacy:
        assert carries_code(path)
    with pytest.raises(EngineError) as e:
        untrusted.load_tensors(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused: not a plain tensor file (it would run code when loaded: ")
    assert ("system" if how is RunsCommand else "exec") in msg
    assert "weights_only" not in msg  # never advice to load it unsafely
    assert e.value.kind == "refused"  # the error event's kind
    assert not marker.exists()


def test_plain_tensor_files_load_and_foreign_files_are_named(tmp_path):
    body = {"model": {"w": torch.arange(3.0)}, "step": 7, "best": {"cer": None, "loss": float("inf")},
            "ids": ["a", "b"], "shape": (2, 3)}
    torch.save(body, tmp_path / "ok.pt")
    got = untrusted.load_tensors(str(tmp_path / "ok.pt"))
    assert got["step"] == 7 and got["ids"] == ["a", "b"] and torch.equal(got["model"]["w"], torch.arange(3.0))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(EngineError, match=f"^{tmp_path / 'text.pt'}: not a readable tensor file"):
        untrusted.load_tensors(str(tmp_path / "text.pt"))
    with pytest.raises(EngineError, match=f"^{tmp_path / 'none.pt'}: not found"):
        untrusted.load_tensors(str(tmp_path / "none.pt"))
    # a torch file whose members claim more than the cap is refused before loading
    untrusted.configure({"max_unpacked_bytes": 1000})
    torch.save({"w": torch.zeros(1000)}, tmp_path / "big.pt")
    with pytest.raises(EngineError, match="big.pt: refused: unpacks to .* more than max_unpacked_bytes"):
        untrusted.load_tensors(str(tmp_path / "big.pt"))


def test_rng_state_survives_a_weights_only_round_trip_exactly(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn(3)  # leaves a cached Gaussian in both generators
    torch.save({"rng": checkpoint.rng_state()}, tmp_path / "rng.pt")

    def draw():
        return (random.random(), random.gauss(0, 1), np.random.randn(4).tolist(), np.random.randint(1 << 30),
                torch.rand(3).tolist())
    expected = draw()
    draw()
    checkpoint.set_rng_state(untrusted.load_tensors(str(tmp_path / "rng.pt"))["rng"])
    assert draw() == expected


def test_json_is_capped_in_size_and_depth(tmp_path):
    path = tmp_path / "card.json"
    path.write_text('{"a": [1, 2]}')
    assert untrusted.read_json(str(path)) == {"a": [1, 2]}
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(EngineError, match=f"^{path}: refused: JSON nested too deeply"):
        untrusted.read_json(str(path))
    with open(path, "w") as f:  # just over the default cap of 32 MiB
        f.write('{"x": "' + "a" * (32 << 20) + '"}')
    with pytest.raises(EngineError, match=f"^{path}: refused: JSON larger than max_json_bytes \\(32.0 MiB\\)"):
        untrusted.read_json(str(path))
    untrusted.configure({"max_json_bytes": 10})
    path.write_text('{"a": [1, 2, 3]}')
    with pytest.raises(EngineError, match="larger than max_json_bytes"):
        untrusted.read_json(str(path))
    untrusted.configure({})
    path.write_text("{not json")
    with pytest.raises(EngineError, match=f"^{path}: not valid JSON"):
        untrusted.read_json(str(path))


def test_caps_are_config_keys_with_sane_defaults():
    d = untrusted.configure({"dataset": "x"})
    assert (d.max_unpacked_bytes, d.max_archive_members, d.max_json_bytes) == (16 << 30, 10_000, 32 << 20)
    assert untrusted.configure({"max_archive_members": 5}).max_archive_members == 5
    for bad, why in ((0, "at least 1"), (-1, "at least 1"), ("10", "wrong type"), (1.5, "wrong type"),
                     (True, "wrong type")):
        with pytest.raises(EngineError, match=f"max_unpacked_bytes (must be|has a) {why}"):
            untrusted.configure({"max_unpacked_bytes": bad})


def test_an_honest_tar_and_zip_unpack_completely(tmp_path):
    files = {"config.json": b"{}", "language_model/lm.arpa": b"\\data\\\n", "a/b/c.txt": b"deep"}
    tar = tar_with(tmp_path / "m.tar", [(member("language_model", tarfile.DIRTYPE), None)]
                   + [(member(n), d) for n, d in files.items()])
    zp = zip_with(tmp_path / "m.zip", list(files.items()))
    for src in (tar, zp):
        into = tmp_path / ("out-" + os.path.basename(src))
        untrusted.extract(src, str(into))
        for name, data in files.items():
            assert (into / name).read_bytes() == data
        assert not os.path.exists(str(into) + ".part")
    # extracting again replaces the folder (a retried job)
    untrusted.extract(tar, str(tmp_path / "out-m.tar"))
    assert tree(tmp_path / "out-m.tar") == tree(tmp_path / "out-m.zip") | {"language_model"}


@pytest.fixture(scope="module")
def tars(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tars")
    out = hostile_tars(folder, folder / "ran")
    out["too many members"] = tar_with(folder / "many.tar", [(member(f"f{i}"), b"x") for i in range(21)])
    out["twice the same name"] = tar_with(folder / "twice.tar", [(member("a"), b"1"), (member("a"), b"2")])
    return out


@pytest.mark.parametrize("kind", ["symlink to /", "hard link", "dot-dot entry", "absolute path", "device node",
                                  "named pipe", "tar bomb", "too many members", "twice the same name"])
def test_a_hostile_tar_is_refused_and_writes_nothing_outside(tars, tmp_path, kind):
    untrusted.configure({"max_unpacked_bytes": 16 << 20, "max_archive_members": 20})
    work = tmp_path / "job" / "out"
    work.mkdir(parents=True)
    before, inputs = tree(tmp_path), tree(os.path.dirname(tars[kind]))
    with pytest.raises(EngineError) as e:
        untrusted.extract(tars[kind], str(work / "model"))
    assert str(e.value).startswith(f"{tars[kind]}: refused: "), str(e.value)
    assert tree(tmp_path) == before  # no folder, no .part, nothing escaped
    assert tree(os.path.dirname(tars[kind])) == inputs
    assert not os.path.exists("/tmp/escaped-abs.txt")


def test_zip_links_dot_dot_and_bombs_are_refused(tmp_path):
    untrusted.configure({"max_unpacked_bytes": 1 << 20})
    cases = {
        "symbolic link": zip_with(tmp_path / "link.zip", [("config.json", b"{}"), zip_symlink("etc", "/etc")]),
        "outside the folder": zip_with(tmp_path / "up.zip", [("config.json", b"{}"), ("../../up.txt", b"x")]),
        "max_unpacked_bytes": zip_with(tmp_path / "bomb.zip", [("zeros", bytes(8 << 20))]),
    }
    assert os.path.getsize(cases["max_unpacked_bytes"]) < 100_000  # it really is a bomb
    for why, src in cases.items():
        before = tree(tmp_path)
        with pytest.raises(EngineError, match=f"^{src}: refused: .*{why}"):
            untrusted.extract(src, str(tmp_path / "model"))
        assert tree(tmp_path) == before


def test_zip_members_outside_the_allowed_set_are_refused(tmp_path):
    ok = zip_with(tmp_path / "ok.tm", [("params.json", b"{}"), ("action.cb", b"CBM1...")])
    assert untrusted.read_zip_members(ok, {"params.json", "action.cb", "char.cb"})["action.cb"] == b"CBM1..."
    bad = zip_with(tmp_path / "bad.tm", [("params.json", b"{}"), ("evil.pkl", b"x")])
    with pytest.raises(EngineError, match=f"^{bad}: refused: unexpected member 'evil.pkl'"):
        untrusted.read_zip_members(bad, {"params.json"})


def test_a_model_folder_with_links_or_pickled_weights_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    untrusted.check_tree(str(folder), "given/model")
    (folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(EngineError, match="^given/model: refused: pytorch_model.bin is a pickle-based weights"):
        untrusted.check_tree(str(folder), "given/model")
    (folder / "pytorch_model.bin").unlink()
    os.symlink("/etc/passwd", folder / "vocab.json")
    with pytest.raises(EngineError, match="^given/model: refused: vocab.json is a symbolic link"):
        untrusted.check_tree(str(folder), "given/model")
