"""The `transcribe` command: the shared CTC transcription with this engine's model loader."""
from ..ctc import transcribe
from .config import Transcribe
from .model import Recipe


def run(config, stop) -> dict:
    return transcribe.run(Recipe(), Transcribe.of(config), stop)
