"""Model engines for gpu-worker: StableTTS-style TTS and W2V2-BERT CTC ASR.

Each engine is run as `python -m gpuworker_engines <engine> <command> --config
config.json`, reads a dataset folder, writes to an output folder and reports on
stdout as JSON lines (see events.py). Engines know nothing of GitLab.
"""
