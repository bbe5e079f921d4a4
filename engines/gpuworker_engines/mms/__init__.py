"""MMS adapter speech recognition: a multilingual wav2vec2 base (facebook/mms-1b-all) stays
frozen; only the small per-language attention adapters and the output head are trained.
The published adapter of the language is the starting point when the base has one."""
