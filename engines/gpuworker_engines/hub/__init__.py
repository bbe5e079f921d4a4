"""Hugging Face hub references: fetched before a job, outside the engines' sandbox; read
from the local cache inside it.

Engines may run where there is no network (the worker sets HF_HUB_OFFLINE=1 for
them). `python -m gpuworker_engines hub fetch` (hub/cli.py) runs first, with
network, and puts every reference a job names into the Hugging Face cache; the
engines then resolve the same references from the cache, and one that is not
there fails with "<ref>: not in the local cache: fetch it first".

A reference is one of
    owner/repo                            a model repository (transformers' from_pretrained)
    hf://owner/repo[@revision]/path/file  one file, with its .json sidecar of the same
                                          stem when the repository has one
    an existing local path                used as it is
"""
import os
import re

from ..events import EngineError, warning

FILE_PREFIX = "hf://"
FETCH_HINT = "python -m gpuworker_engines hub fetch"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# per-language adapters of an MMS repository (over a thousand): fetched one at a time, by file
_ADAPTER = re.compile(r"adapter\.[^/]+\.safetensors")
_SMALL = (".json", ".txt", ".md", ".model")
_PICKLED_WEIGHTS = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")


class _Absent:
    """The hub said the file does not exist (remembered in the cache)."""


ABSENT = _Absent()


def offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def parse_file(ref: str) -> tuple[str, str, str | None]:
    """hf://<owner>/<repo>[@revision]/<path/in/repo> -> (repo_id, filename, revision)."""
    parts = ref[len(FILE_PREFIX):].split("/")
    if not ref.startswith(FILE_PREFIX) or len(parts) < 3 or not all(parts) or \
            any(p in (".", "..") for p in parts):
        raise EngineError(f"hub reference {ref!r} is not hf://<owner>/<repo>/<path/in/repo>")
    repo, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{repo}", "/".join(parts[2:]), revision or None


def is_repo_id(ref: str) -> bool:
    return bool(_REPO_ID.fullmatch(ref)) and ".." not in ref


def cached(repo_id: str, filename: str, revision: str | None = None):
    """The cached file's path, ABSENT when the hub said it does not exist, None when unknown."""
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError as e:  # a repository id or file name the hub would not accept
        raise EngineError(f"{repo_id}/{filename}: not a hub reference: {e}") from None
    if isinstance(found, str):
        return found
    return ABSENT if found is _CACHED_NO_EXIST else None


def not_cached(ref: str) -> EngineError:
    return EngineError(f"{ref}: not in the local cache: fetch it first ({FETCH_HINT})")


def resolve_file(ref: str, sidecar: bool = False) -> str:
    """The local path of hf://... (downloaded unless offline)."""
    repo_id, filename, revision = parse_file(ref)
    if offline():
        found = cached(repo_id, filename, revision)
        if found is ABSENT:
            raise EngineError(f"{ref}: the repository has no such file")
        if found is None:
            raise not_cached(ref)
        return found
    return _download(ref, sidecar, hint="; download it and give its local path instead")


def local_file(ref: str, what: str, sidecar: bool = False) -> str:
    """The local path of a file a config names: an existing local file, or hf://... (see
    resolve_file). `what` names the file in errors."""
    if not ref:
        raise EngineError(f"no {what} given")
    if ref.startswith(FILE_PREFIX):
        return resolve_file(ref, sidecar)
    if not os.path.isfile(ref):
        raise EngineError(f"{what} not found: {ref}")
    return ref


def _download(ref: str, sidecar: bool, optional: bool = False, hint: str = "") -> str | None:
    """hf://... into the cache, with its .json sidecar when asked for and the repository has
    one; None: an optional file the hub lacks (the cache remembers the absence, for offline
    lookups)."""
    repo_id, filename, revision = parse_file(ref)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise EngineError(f"{ref}: hub references need the huggingface_hub package") from None
    try:
        path = hf_hub_download(repo_id, filename, revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, missing repo or file, auth
        if optional and isinstance(e, EntryNotFoundError):
            return None
        raise EngineError(f"{ref}: cannot fetch from the Hugging Face hub ({type(e).__name__}: {e}){hint}") from None
    if sidecar:
        try:
            hf_hub_download(repo_id, os.path.splitext(filename)[0] + ".json", revision=revision)
        except Exception:  # noqa: BLE001 - most files have no sidecar (a published model)
            pass
    return path


def require_repo(src: str) -> bool:
    """Before from_pretrained(src): True when src is a local folder; for a hub id while
    offline, refuses one whose config.json is not cached. Returns local_files_only."""
    if os.path.isdir(src):
        return True
    if not offline():
        return False
    if not is_repo_id(src) or not isinstance(cached(src, "config.json"), str):
        raise not_cached(src)
    return True


def repo_file(src: str, name: str) -> str | None:
    """A file of a base that is a local folder or a hub repository; None when it has none.
    Offline, only what the cache knows: a file never fetched is an error, not an absence."""
    if os.path.isdir(src):
        path = os.path.join(src, name)
        return path if os.path.exists(path) else None
    if offline():
        found = cached(src, name)
        if found is None:
            raise EngineError(f"{FILE_PREFIX}{src}/{name}: not in the local cache: fetch it first "
                              f"({FETCH_HINT}, as an optional reference)")
        return None if found is ABSENT else found
    from transformers.utils import cached_file
    try:
        return cached_file(src, name, _raise_exceptions_for_missing_entries=False)
    except Exception as e:  # noqa: BLE001 - gated, network, ...
        warning(f"could not look for {name} in {src}: {e}")
        return None


def pretrained_kwargs(src: str, weights: bool = False) -> dict:
    """from_pretrained's arguments for src: never the model's own code; weights through
    weights_only=True, and from safetensors only when src is a folder (an unpacked artifact
    may come from a project); a hub id from the cache alone when offline."""
    kw = dict(trust_remote_code=False, local_files_only=require_repo(src))
    if weights:
        kw["weights_only"] = True
        if os.path.isdir(src):
            kw["use_safetensors"] = True
    return kw


# --- fetching (with network, outside the sandbox) -------------------------------------------------

def repo_files_to_fetch(files: list[str]) -> list[str]:
    """What from_pretrained reads: the configs, tokenizer and card files, and the weights
    (safetensors when there are any); never the per-language adapters."""
    base = {f: f.rsplit("/", 1)[-1] for f in files}
    weights = [f for f in files if f.endswith(".safetensors") and not _ADAPTER.fullmatch(base[f])]
    if not weights:
        weights = [f for f in files if _PICKLED_WEIGHTS.fullmatch(base[f])]
    small = [f for f in files if f.endswith(_SMALL)]
    return sorted(set(weights + small))


def fetch(ref: str, optional: bool = False) -> str | None:
    """Puts ref into the cache; returns its local path (None: an optional file the hub lacks)."""
    if os.path.exists(ref):
        return ref
    if ref.startswith(FILE_PREFIX):
        return _download(ref, sidecar=True, optional=optional)
    if not is_repo_id(ref):
        raise EngineError(f"{ref}: neither an existing local path nor a hub reference "
                          f"(owner/repo or {FILE_PREFIX}owner/repo/file)")
    from huggingface_hub import list_repo_files, snapshot_download
    try:
        files = repo_files_to_fetch(list_repo_files(ref))
        return snapshot_download(ref, allow_patterns=files)
    except Exception as e:  # noqa: BLE001 - missing repo, gated, network
        raise EngineError(f"{ref}: cannot fetch from the Hugging Face hub: {type(e).__name__}: {e}") from None
