"""Hub references: `hub fetch` fills the cache (outside the sandbox, with network; here the hub
is faked), and with HF_HUB_OFFLINE=1 the engines resolve the same references from the cache
alone, or say which one to fetch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest

from asr_common import ENGINES, engine_env
from gpuworker_engines import events, hub
from gpuworker_engines.events import EngineError
from gpuworker_engines.hub.cli import fetch
from gpuworker_engines.stabletts import check, ckpt
from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.frontend import choose
from gpuworker_engines.stabletts.model import StableTTS
from stabletts_fixtures import FIXTURES
from test_stabletts_train import SMALL

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached_repo(cache: Path, repo_id: str, files: dict[str, bytes | Path], absent=()) -> Path:
    """A repository laid out as the Hugging Face cache keeps it: refs/main -> snapshots/<commit>/,
    and .no_exist/<commit>/<name> for files the hub said it lacks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    for name, content in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, snap / name)
        else:
            (snap / name).write_bytes(content)
    for name in absent:
        (repo / ".no_exist" / COMMIT / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / COMMIT / name).touch()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 over an empty cache; any download attempt fails the test."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def no_network(*a, **kw):
        raise AssertionError("a download was attempted while offline")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    return cache


class FakeHub:
    """Stands in for the hub: records what was asked, serves a listing and some files."""

    def __init__(self, root: Path, listing: dict[str, list[str]], missing=()):
        self.root, self.listing, self.missing, self.calls = root, listing, set(missing), []

    def install(self, monkeypatch):
        monkeypatch.setattr(huggingface_hub, "list_repo_files", self.list_repo_files)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)

    def list_repo_files(self, repo_id, revision=None, **kw):
        return self.listing[repo_id]

    def snapshot_download(self, repo_id, allow_patterns=None, **kw):
        self.calls.append(("snapshot", repo_id, tuple(allow_patterns)))
        return str(self.root / repo_id / "snapshot")

    def hf_hub_download(self, repo_id, filename, revision=None, **kw):
        self.calls.append(("file", repo_id, filename, revision))
        if f"{repo_id}/{filename}" in self.missing or filename.endswith(".json"):
            from huggingface_hub.errors import EntryNotFoundError
            raise EntryNotFoundError(f"{filename} not found")
        return str(self.root / repo_id / filename)


def test_fetch_puts_each_kind_of_reference_in_the_cache(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path, {"facebook/mms-1b-all": [
        "config.json", "model.safetensors", "pytorch_model.bin", "vocab.json", "README.md", "tokenizer_config.json",
        "adapter.abc.safetensors", "adapter.xyz.safetensors", "special_tokens_map.json"],
        "old/xls-r": ["config.json", "pytorch_model.bin", "preprocessor_config.json"]},
        missing={"facebook/mms-1b-all/adapter.qqq.safetensors"})
    fake.install(monkeypatch)
    local = tmp_path / "vocos.pt"
    local.write_bytes(b"x")
    refs = ["facebook/mms-1b-all", "hf://KdaiP/StableTTS1.1@v1/StableTTS/checkpoint_0.pt", str(local), "old/xls-r"]
    optional = ["hf://facebook/mms-1b-all/adapter.xyz.safetensors", "hf://facebook/mms-1b-all/adapter.qqq.safetensors"]
    out = fetch({"refs": refs, "optional_refs": optional}, events.StopFlag())["paths"]
    assert out == {
        "facebook/mms-1b-all": str(tmp_path / "facebook/mms-1b-all/snapshot"),
        "hf://KdaiP/StableTTS1.1@v1/StableTTS/checkpoint_0.pt": str(tmp_path / "KdaiP/StableTTS1.1/StableTTS/checkpoint_0.pt"),
        str(local): str(local), "old/xls-r": str(tmp_path / "old/xls-r/snapshot"),
        "hf://facebook/mms-1b-all/adapter.xyz.safetensors": str(tmp_path / "facebook/mms-1b-all/adapter.xyz.safetensors"),
        "hf://facebook/mms-1b-all/adapter.qqq.safetensors": None}
    snapshots = {c[1]: set(c[2]) for c in fake.calls if c[0] == "snapshot"}
    # the configs and the safetensors weights, never the thousand adapters or a pickle beside safetensors
    assert snapshots["facebook/mms-1b-all"] == {"config.json", "model.safetensors", "vocab.json", "README.md",
                                                "tokenizer_config.json", "special_tokens_map.json"}
    assert snapshots["old/xls-r"] == {"config.json", "pytorch_model.bin", "preprocessor_config.json"}
    files = [c[1:] for c in fake.calls if c[0] == "file"]
    assert ("KdaiP/StableTTS1.1", "StableTTS/checkpoint_0.pt", "v1") in files
    assert ("KdaiP/StableTTS1.1", "StableTTS/checkpoint_0.json", "v1") in files  # its sidecar, when there is one


def test_a_hub_vocoder_is_fetched_once_and_without_a_sidecar(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path, {})
    fake.install(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    (tmp_path / "team" / "voc").mkdir(parents=True)
    shutil.copy(FIXTURES / "tiny_vocoder.pt", tmp_path / "team" / "voc" / "vocos.pt")
    out = check.run({"vocoder": "hf://team/voc/vocos.pt"}, None)
    assert out["vocoder"]["parameters"] == 105_570
    assert fake.calls == [("file", "team/voc", "vocos.pt", None)]


def test_fetch_names_a_reference_it_cannot_get(tmp_path, monkeypatch):
    FakeHub(tmp_path, {}, missing={"a/b/c.pt"}).install(monkeypatch)
    with pytest.raises(EngineError, match=r"^hf://a/b/c\.pt: cannot fetch from the Hugging Face hub"):
        fetch({"refs": ["hf://a/b/c.pt"]}, events.StopFlag())
    with pytest.raises(EngineError, match="^not a repo: neither an existing local path nor a hub reference"):
        fetch({"refs": ["not a repo"]}, events.StopFlag())
    with pytest.raises(EngineError, match="refs must be a list of strings"):
        fetch({"refs": "a/b"}, events.StopFlag())
    with pytest.raises(EngineError, match="refs and optional_refs must be lists of non-empty strings"):
        fetch({"optional_refs": [""]}, events.StopFlag())
    with pytest.raises(EngineError, match="not hf://"):
        fetch({"refs": ["hf://a/b/../../x"]}, events.StopFlag())


def test_fetch_is_an_engine_command(tmp_path):
    local = tmp_path / "model.pt"
    local.write_bytes(b"x")
    (tmp_path / "c.json").write_text(json.dumps({"refs": [str(local)]}))
    proc = subprocess.run([sys.executable, "-m", "gpuworker_engines", "hub", "fetch", "--config", str(tmp_path / "c.json")],
                          cwd=ENGINES, env=engine_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"event": "result", "paths": {str(local): str(local)}}


def test_offline_stabletts_reference_comes_from_the_cache(offline, tmp_path):
    cfg = ModelConfig.from_dict(SMALL)
    made = tmp_path / "made" / "best_model.pt"
    fe = choose("graphemes", ["abcde"], None)
    ckpt.save_model(StableTTS(cfg, len(fe)), ckpt.Meta(cfg, fe, "tiny", "scratch", published=False), str(made))
    cached_repo(offline, "team/voice", {"models/best_model.pt": made, "models/best_model.json": made.with_suffix(".json")})
    model, meta = ckpt.load_model("hf://team/voice/models/best_model.pt")
    assert meta.config == cfg and not meta.published  # the sidecar came from the cache too
    with pytest.raises(EngineError, match=r"^hf://team/voice/models/other\.pt: not in the local cache: fetch it first"):
        ckpt.resolve("hf://team/voice/models/other.pt")
    with pytest.raises(EngineError, match=r"^hf://KdaiP/StableTTS1\.1/x\.pt: not in the local cache: fetch it first"):
        ckpt.load_model("hf://KdaiP/StableTTS1.1/x.pt")


def test_offline_repository_files_are_cached_known_absent_or_an_error(offline):
    cached_repo(offline, "facebook/mms-1b-all", {"config.json": b"{}", "adapter.xyz.safetensors": b"x"},
                absent=["adapter.qqq.safetensors"])
    assert hub.repo_file("facebook/mms-1b-all", "adapter.xyz.safetensors").endswith("adapter.xyz.safetensors")
    assert hub.repo_file("facebook/mms-1b-all", "adapter.qqq.safetensors") is None  # the hub said it has none
    with pytest.raises(EngineError, match="adapter.abc.safetensors: not in the local cache: fetch it first"):
        hub.repo_file("facebook/mms-1b-all", "adapter.abc.safetensors")
    assert hub.require_repo("facebook/mms-1b-all") is True
    with pytest.raises(EngineError, match="^facebook/w2v-bert-2.0: not in the local cache: fetch it first"):
        hub.require_repo("facebook/w2v-bert-2.0")


OFFLINE_BASE = r"""
import sys
from gpuworker_engines.events import EngineError
from gpuworker_engines.w2v2bert.config import TrainConfig
from gpuworker_engines.w2v2bert.model import Recipe
for base in sys.argv[2:]:
    cfg = TrainConfig.from_dict({"dataset": "d", "output_dir": sys.argv[1], "base_model": base})
    try:
        r = Recipe()
        arch = r.arch(cfg)
        cfg.resolve(arch)
        built = r.build(cfg, ["abc", "cab"])
        print("built", arch, type(built.model).__name__, built.info["licence"])
    except EngineError as e:
        print("error", e)
"""


def test_offline_ctc_base_model_loads_from_the_cache_by_its_hub_id(tmp_path):
    cache = tmp_path / "hf-cache"
    tiny = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "gpuworker_engines.ctc.tinyhub", "--out", str(tiny), "--architecture",
                    "w2v2bert"], cwd=ENGINES, env=engine_env(), check=True, capture_output=True)
    cached_repo(cache, "facebook/w2v-bert-2.0", {n: tiny / n for n in os.listdir(tiny)})
    env = {**engine_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", OFFLINE_BASE, str(tmp_path / "out"), "facebook/w2v-bert-2.0",
                          "facebook/mms-1b-all"], cwd=ENGINES, env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-2:] == [
        "built w2v2bert Wav2Vec2BertForCTC mit",
        "error facebook/mms-1b-all: not in the local cache: fetch it first (python -m gpuworker_engines hub fetch)"], \
        out.stderr[-2000:]
