"""Commands of the hub "engine": fetch, run by the worker with network before a job.

    fetch   config FetchConfig (hub/config.py) -> {"paths": {ref: local path}}

Each reference (see hub/__init__.py) is put into the Hugging Face cache: a repository
id as the files from_pretrained reads, an hf:// file with its .json sidecar when the
repository has one; a local path is returned as it is. A required reference that
cannot be fetched fails the command with its name; an optional one the repository
lacks maps to null (e.g. the published MMS adapter of a language that has none).
"""
from .. import events
from . import fetch as fetch_ref
from .config import FetchConfig


def fetch(config, stop) -> dict:
    cfg = FetchConfig.of(config)
    refs, optional = cfg.refs, cfg.optional_refs
    paths = {}
    for ref, is_optional in [(r, False) for r in refs] + [(r, True) for r in optional]:
        if stop:
            raise events.Interrupted("stopped while fetching hub references")
        events.log(f"fetch: {ref}")
        paths[ref] = fetch_ref(ref, optional=is_optional)
        events.log(f"fetch: {ref} -> {paths[ref] or 'not in the repository'}")
    return {"paths": paths}


COMMANDS = {"fetch": fetch}
