"""Commands of the hub "engine": fetch, run by the worker with network before a job.

    fetch   config {"refs": [...], "optional_refs": [...]} -> {"paths": {ref: local path}}

Each reference (see hub/__init__.py) is put into the Hugging Face cache: a repository
id as the files from_pretrained reads, an hf:// file with its .json sidecar when the
repository has one; a local path is returned as it is. A required reference that
cannot be fetched fails the command with its name; an optional one the repository
lacks maps to null (e.g. the published MMS adapter of a language that has none).
"""
from .. import events
from ..events import EngineError
from . import fetch as fetch_ref


def fetch(config: dict, stop) -> dict:
    refs, optional = config.get("refs") or [], config.get("optional_refs") or []
    if not isinstance(refs, list) or not isinstance(optional, list) or \
            not all(isinstance(r, str) and r for r in refs + optional):
        raise EngineError("config: refs and optional_refs must be lists of non-empty strings")
    paths = {}
    for ref, is_optional in [(r, False) for r in refs] + [(r, True) for r in optional]:
        if stop:
            raise events.Interrupted("stopped while fetching hub references")
        events.log(f"fetch: {ref}")
        paths[ref] = fetch_ref(ref, optional=is_optional)
        events.log(f"fetch: {ref} -> {paths[ref] or 'not in the repository'}")
    return {"paths": paths}


COMMANDS = {"fetch": fetch}
