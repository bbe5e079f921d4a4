"""Models, feature extractors and tokenizers for both architectures.

W2V2-BERT takes 80-bin fbank frames stacked in pairs (160 dims); classic
wav2vec2 / XLS-R / MMS takes the raw waveform. The base model's config
`model_type` decides which; `size: "tiny"` builds a small random model in code.
"""
import json
import os

import numpy as np
import soundfile as sf
import torch
from transformers import (AutoConfig, AutoFeatureExtractor, SeamlessM4TFeatureExtractor,
                          Wav2Vec2BertConfig, Wav2Vec2BertForCTC, Wav2Vec2Config,
                          Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC)

from ..events import EngineError
from . import SAMPLE_RATE, artifact
from .vocab import DELIM, PAD, UNK

MODEL_TYPES = {"wav2vec2-bert": "w2v2bert", "wav2vec2": "wav2vec2"}
CLASSES = {"w2v2bert": Wav2Vec2BertForCTC, "wav2vec2": Wav2Vec2ForCTC}


def tiny_config(arch: str, vocab_size: int, add_adapter: bool = False, hidden: int = 48):
    if arch == "w2v2bert":
        return Wav2Vec2BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=hidden * 2, feature_projection_input_dim=160,
            conv_depthwise_kernel_size=15, add_adapter=add_adapter, adapter_kernel_size=3,
            adapter_stride=2, num_adapter_layers=1, pad_token_id=0)
    return Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=hidden * 2, conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4),
        conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=True, pad_token_id=0)


def default_feature_extractor(arch: str):
    if arch == "w2v2bert":
        # as published with facebook/w2v-bert-2.0
        return SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SAMPLE_RATE,
                                           padding_value=1.0, stride=2)
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def tokenizer_from_vocab(vocab_path: str) -> Wav2Vec2CTCTokenizer:
    return Wav2Vec2CTCTokenizer(vocab_path, unk_token=UNK, pad_token=PAD, word_delimiter_token=DELIM,
                                bos_token=None, eos_token=None)


def _recipe_overrides(cfg, vocab_size: int, arch: str) -> dict:
    d = cfg.dropout
    o = dict(vocab_size=vocab_size, pad_token_id=0, ctc_loss_reduction="mean", ctc_zero_infinity=True,
             hidden_dropout=d, attention_dropout=d, activation_dropout=d, feat_proj_dropout=d,
             final_dropout=d, layerdrop=d, mask_time_prob=cfg.mask_time_prob)
    if arch == "w2v2bert":
        o["add_adapter"] = cfg.add_adapter  # halves the frame rate; wav2vec2's adapter would cut it 8x
    return o


def arch_of(model_type: str) -> str:
    arch = MODEL_TYPES.get(model_type)
    if arch is None:
        raise EngineError(f"unsupported base model type {model_type!r} "
                          f"(supported: {', '.join(sorted(MODEL_TYPES))})")
    return arch


def resolve_base(cfg) -> str:
    """A hub id or local folder to load from; a packed ASR artifact is unpacked first."""
    src = cfg.base_model
    if os.path.isfile(src):
        src = artifact.unpack(src, os.path.join(os.path.abspath(cfg.output_dir), "base_model"))
    return src


def base_vocab(src: str) -> dict | None:
    """The vocab of a base this engine fine-tuned before (its CTC head is worth keeping), else None."""
    path = os.path.join(src, "vocab.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        v = json.load(f)
    ours = v.get(PAD) == 0 and v.get(UNK) == 1 and v.get(DELIM) == 2
    if ours and sorted(v.values()) == list(range(len(v))):
        return v
    return None


def load_base(cfg, vocab_size: int, src: str | None = None, keep_head: int = 0):
    """The model to fine-tune and its feature extractor: (model, feature_extractor, arch).

    keep_head: rows of the base's CTC head to keep (a base fine-tuned by this
    engine, whose vocab was extended); new rows start random.
    """
    if cfg.size == "tiny":
        arch = cfg.architecture
        conf = tiny_config(arch, vocab_size, add_adapter=cfg.add_adapter)
        for k, v in _recipe_overrides(cfg, vocab_size, arch).items():
            setattr(conf, k, v)
        return CLASSES[arch](conf), default_feature_extractor(arch), arch
    src = src or cfg.base_model
    local = os.path.isdir(src)
    try:
        conf = AutoConfig.from_pretrained(src, local_files_only=local)
    except Exception as e:  # noqa: BLE001 - hub and file errors come in many types
        raise EngineError(f"load base model {src}: {e}") from None
    arch = arch_of(conf.model_type)
    overrides = _recipe_overrides(cfg, keep_head or vocab_size, arch)
    try:
        model = CLASSES[arch].from_pretrained(src, local_files_only=local, ignore_mismatched_sizes=True,
                                              **overrides)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"load base model {src}: {e}") from None
    if keep_head and vocab_size > keep_head:
        _grow_head(model, vocab_size)
    try:
        fe = AutoFeatureExtractor.from_pretrained(src, local_files_only=local)
    except Exception:  # noqa: BLE001 - bare checkpoints ship without a preprocessor config
        fe = default_feature_extractor(arch)
    return model, fe, arch


def _grow_head(model, vocab_size: int) -> None:
    old = model.lm_head
    new = torch.nn.Linear(old.in_features, vocab_size)
    with torch.no_grad():
        new.weight[:old.out_features] = old.weight
        new.bias[:old.out_features] = old.bias
    model.lm_head = new
    model.config.vocab_size = vocab_size


def load_trained(directory: str, device: str = "cpu"):
    """A fine-tuned model folder: (model, feature_extractor, tokenizer, arch)."""
    try:
        conf = AutoConfig.from_pretrained(directory, local_files_only=True)
        arch = arch_of(conf.model_type)
        model = CLASSES[arch].from_pretrained(directory, local_files_only=True)
        fe = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True)
        tok = Wav2Vec2CTCTokenizer.from_pretrained(directory, local_files_only=True)
    except EngineError:
        raise
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"load ASR model {directory}: {e}") from None
    return model.to(device).eval(), fe, tok, arch


def save_trained(model, fe, tok, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    getattr(model, "module", model).save_pretrained(directory)
    fe.save_pretrained(directory)
    tok.save_pretrained(directory)


def load_audio(path: str) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE; other rates are resampled."""
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise EngineError(f"read audio {path}: {e}") from None
    wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly
        g = gcd(sr, SAMPLE_RATE)
        wav = resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return wav


def featurize(fe, arch: str, waves: list[np.ndarray]) -> dict:
    """Padded model inputs for a batch: {input_features|input_values, attention_mask}."""
    out = fe(waves, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
             return_tensors="pt")
    key = "input_features" if arch == "w2v2bert" else "input_values"
    return {key: out[key], "attention_mask": out["attention_mask"]}


def output_lengths(model, attention_mask: torch.Tensor) -> torch.Tensor:
    m = getattr(model, "module", model)
    return m._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)
