"""W2V2-BERT (and classic wav2vec2) CTC speech recognition, fine-tuning the whole model, with
an n-gram language model and optional SentenceTransmorgrifier post-correction."""
from ..ctc import SAMPLE_RATE  # noqa: F401 - the rate the worker resamples dataset audio to
