"""The `transcribe` command: the shared CTC transcription with this engine's model loader."""
from ..ctc import transcribe
from .model import Recipe


def run(config: dict, stop) -> dict:
    return transcribe.run(Recipe(), config, stop)
