"""The `transcribe` command: the shared CTC transcription, the base with this engine's adapter."""
from ..ctc import transcribe
from .model import Recipe


def run(config: dict, stop) -> dict:
    return transcribe.run(Recipe(), config, stop)
