"""W2V2-BERT (and classic wav2vec2) CTC speech recognition with optional
SentenceTransmorgrifier post-correction."""
SAMPLE_RATE = 16000  # the rate the worker resamples dataset audio to
