"""What the GPU check trains on: generated audio and randomly initialised models
in the published layouts. No network, no espeak-ng (the GPU machine has neither):
the audio is voiced, syllable-shaped noise with a pitch contour, which costs a
model as much compute as speech does."""
import json
import math
from pathlib import Path

import numpy as np
from scipy.io import wavfile

VERSES = ["In the beginning was the Word, and the Word was with God.",
          "The light shines in the darkness, and the darkness has not overcome it.",
          "There came a man, sent from God, whose name was John.",
          "He came as a witness, to testify about the light.",
          "The true light that enlightens everyone was coming into the world.",
          "He was in the world, and the world was made through him.",
          "Grace and truth were realized through Jesus Christ.",
          "No one has seen God at any time."]


def utterance(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 110 + 30 * np.sin(2 * math.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * math.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.5 * (1 + np.sin(2 * math.pi * 4 * t + rng.uniform(0, 6))) ** 2
    x = (voiced * syllables + 0.05 * rng.standard_normal(n)) * 0.2
    return x.astype(np.float32)


def dataset(folder: Path, items: int, seconds: float, rate: int, seed: int = 0) -> Path:
    """A dataset folder as the worker hands engines: clean mono WAVs + index.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(items):
        name = f"{i:05d}.wav"
        secs = seconds * rng.uniform(0.7, 1.3)
        wavfile.write(folder / name, rate, (utterance(secs, rate, rng) * 32767).astype(np.int16))
        lines.append({"id": f"c{i}", "cell_id": f"c{i}", "reference": f"JHN 1:{i + 1}",
                      "text": VERSES[i % len(VERSES)], "audio": name, "duration": round(secs, 3)})
    (folder / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def text_dataset(folder: Path, items: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"id": f"t{i}", "cell_id": f"t{i}", "reference": f"JHN 2:{i + 1}", "text": VERSES[i % len(VERSES)],
              "audio": None, "duration": 0} for i in range(items)]
    (folder / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def published_tts(path: Path) -> Path:
    """A random StableTTS v1.1 in the published layout and format (a bare state_dict)."""
    import torch
    from gpuworker_engines.stabletts.config import ModelConfig
    from gpuworker_engines.stabletts.model import StableTTS
    torch.manual_seed(0)
    torch.save(StableTTS(ModelConfig.published(), 401).state_dict(), path)
    return path


def published_vocoder(path: Path) -> Path:
    """A random Vocos at the published size (128 mels → 512, 8 layers)."""
    import torch
    from gpuworker_engines.stabletts.vocoder import Vocos
    torch.manual_seed(0)
    torch.save(Vocos().state_dict(), path)
    return path


def w2v_bert_snapshot(folder: Path, full: bool) -> Path:
    """A folder laid out like the facebook/w2v-bert-2.0 snapshot: its full-size
    architecture with random weights, or a tiny one for the dry run."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel
    folder.mkdir(parents=True, exist_ok=True)
    if full:
        cfg = Wav2Vec2BertConfig()  # the published model's dimensions (hidden 1024, 24 layers)
    else:
        cfg = Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=20, output_hidden_size=16, conv_depthwise_kernel_size=3,
                                 feature_projection_input_dim=160)
    Wav2Vec2BertModel(cfg).save_pretrained(folder)
    SeamlessM4TFeatureExtractor().save_pretrained(folder)
    return folder
