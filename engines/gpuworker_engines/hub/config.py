"""Settings of the hub "engine"'s one command, fetch."""
from dataclasses import dataclass

from ..config import Settings, knob
from ..events import EngineError


@dataclass(kw_only=True)
class FetchConfig(Settings):
    """Puts every hub reference a job names into the local Hugging Face cache (run with network)."""
    NAME = "hub fetch"

    refs: list[str] = knob([], help="references the job needs: owner/repo, hf://owner/repo[@revision]/path, "
                                    "or a local path (returned as it is); one that cannot be fetched fails")
    optional_refs: list[str] = knob([], help="references the job can do without: one the repository "
                                             "lacks maps to null")

    def validate(self) -> None:
        if not all(self.refs + self.optional_refs):
            raise EngineError("config: refs and optional_refs must be lists of non-empty strings")


CONFIGS = {"fetch": FetchConfig}
