"""W2V2-BERT (and classic wav2vec2) CTC speech recognition, fine-tuning the whole model, with
an n-gram language model and optional SentenceTransmorgrifier post-correction."""
