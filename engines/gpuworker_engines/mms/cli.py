"""Commands of the mms engine: train (adapter fine-tuning + LM + post-correction + pack) and transcribe."""
from ..ctc import SAMPLE_RATE  # noqa: F401 - the worker reads the rate the engine wants
from .train import train
from .transcribe import run as transcribe

COMMANDS = {"train": train, "transcribe": transcribe}
