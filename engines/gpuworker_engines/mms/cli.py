"""Commands of the mms engine: train (adapter fine-tuning + LM + post-correction + pack)
and transcribe. Both read 16 kHz mono audio (ctc.SAMPLE_RATE), the rate the worker
resamples dataset recordings to; their settings are in config.py."""
from .train import train
from .transcribe import run as transcribe

COMMANDS = {"train": train, "transcribe": transcribe}
