"""What the CTC speech-recognition engines share: text and vocabulary, batched and
chunked transcription, n-gram language model decoding, post-correction, the
training loop, checkpoints, the packed artifact and its model card.

Not an engine itself (no cli module): `w2v2bert` and `mms` build on it.
"""
SAMPLE_RATE = 16000  # the rate the worker resamples dataset audio to
