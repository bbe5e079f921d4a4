"""Models, feature extractors and the fine-tuning recipe of the w2v2bert engine.

W2V2-BERT takes 80-bin fbank frames stacked in pairs (160 dims); classic
wav2vec2 / XLS-R / MMS takes the raw waveform. The base model's config
`model_type` decides which; `size: "tiny"` builds a small random model in code.
The whole model is fine-tuned (wav2vec2's convolutional front end stays frozen).

Loading never runs code from a model: trust_remote_code=False and weights_only=True
on every from_pretrained, and a local folder (an unpacked artifact, which may come
from a project) is read from safetensors only. A hub id resolves from the local
cache when HF_HUB_OFFLINE=1 (hub/__init__.py).
"""
import os

import torch
from transformers import (AutoConfig, AutoFeatureExtractor, SeamlessM4TFeatureExtractor,
                          Wav2Vec2BertConfig, Wav2Vec2BertForCTC, Wav2Vec2Config,
                          Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC)

from .. import hub, untrusted
from ..ctc import artifact, card
from ..ctc import text as text_mod
from ..ctc.head import grow_head
from ..ctc.tinyhub import feature_extractor as default_feature_extractor
from ..ctc.tinyhub import tiny_config
from ..ctc.trainer import Built
from ..events import EngineError, log, warning

MODEL_TYPES = {"wav2vec2-bert": "w2v2bert", "wav2vec2": "wav2vec2"}
CLASSES = {"w2v2bert": Wav2Vec2BertForCTC, "wav2vec2": Wav2Vec2ForCTC}
CONFIGS = {"w2v2bert": Wav2Vec2BertConfig, "wav2vec2": Wav2Vec2Config}
EXTRACTORS = {"w2v2bert": SeamlessM4TFeatureExtractor, "wav2vec2": Wav2Vec2FeatureExtractor}


def recipe_overrides(cfg, vocab_size: int, arch: str, pad_id: int, keep_adapter: bool = False) -> dict:
    d = cfg.dropout
    o = dict(vocab_size=vocab_size, pad_token_id=pad_id, ctc_loss_reduction="mean", ctc_zero_infinity=True,
             hidden_dropout=d, attention_dropout=d, activation_dropout=d, feat_proj_dropout=d,
             final_dropout=d, layerdrop=cfg.layerdrop, mask_time_prob=cfg.mask_time_prob)
    if arch == "w2v2bert" and not keep_adapter:
        o["add_adapter"] = cfg.add_adapter  # halves the frame rate; wav2vec2's adapter would cut it 8x
    return o


def arch_of(model_type: str) -> str:
    arch = MODEL_TYPES.get(model_type)
    if arch is None:
        raise EngineError(f"unsupported base model type {model_type!r} "
                          f"(supported: {', '.join(sorted(MODEL_TYPES))})")
    return arch


def earlier_vocab(src: str) -> dict | None:
    """The vocab of a base this engine fine-tuned before (its CTC head is worth keeping), else None."""
    path = os.path.join(src, "vocab.json")
    if not os.path.isfile(path):
        return None
    v = text_mod.load(path)
    return v if text_mod.is_ctc_vocab(v) else None


def load_trained(directory: str, device: str = "cpu"):
    """A fine-tuned model folder: (model, feature_extractor, tokenizer)."""
    try:
        conf = AutoConfig.from_pretrained(directory, **hub.pretrained_kwargs(directory))
        arch = arch_of(conf.model_type)
        model = CLASSES[arch].from_pretrained(directory, **hub.pretrained_kwargs(directory, weights=True))
        fe = AutoFeatureExtractor.from_pretrained(directory, **hub.pretrained_kwargs(directory))
        tok = text_mod.tokenizer(os.path.join(directory, "vocab.json"))
    except EngineError:
        raise
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"load ASR model {directory}: {e}") from None
    return model.to(device).eval(), fe, tok


def random_start(cfg) -> bool:
    """A tiny job starts from a small random model, unless it continues an earlier one."""
    return cfg.size == "tiny" and not cfg.base_checkpoint


class Recipe:
    """Full fine-tuning of a W2V2-BERT or wav2vec2 base (see ctc/trainer.py for the interface)."""

    engine, title = "w2v2bert", "W2V2-BERT"

    def __init__(self):
        self._src = None

    def source(self, cfg) -> str:
        """A hub id or local folder to load from; a packed ASR artifact is unpacked first."""
        if self._src is None:
            src = cfg.base_checkpoint or cfg.base_model
            if os.path.isfile(src):
                src = artifact.unpack(src, os.path.join(os.path.abspath(cfg.output_dir), "base_model"))
            self._src = src
        return self._src

    def arch(self, cfg) -> str:
        if random_start(cfg):
            return cfg.architecture
        src = self.source(cfg)
        kw = hub.pretrained_kwargs(src)
        try:
            conf = AutoConfig.from_pretrained(src, **kw)
        except Exception as e:  # noqa: BLE001 - hub and file errors come in many types
            raise EngineError(f"load base model {src}: {e}") from None
        return arch_of(conf.model_type)

    def build(self, cfg, texts: list[str]) -> Built:
        vocab, dropped = text_mod.build(texts, cfg.min_char_count)
        if dropped:
            warning(f"{len(dropped)} rare characters map to the unknown token: {''.join(dropped)}")
        if random_start(cfg):
            arch = cfg.architecture
            conf = tiny_config(arch, len(vocab), add_adapter=cfg.add_adapter)
            for k, v in recipe_overrides(cfg, len(vocab), arch, 0).items():
                setattr(conf, k, v)
            model, fe = CLASSES[arch](conf), default_feature_extractor(arch)
            info = {"base_model": "tiny (random)", "licence": None, "new_characters": []}
        else:
            model, fe, vocab, info = self._from_base(cfg, vocab)
            arch = arch_of(model.config.model_type)
        if arch == "wav2vec2":
            model.freeze_feature_encoder()  # the XLS-R/MMS recipe keeps the CNN front end fixed
        info["arch"] = arch
        return Built(model, fe, vocab, arch, info)

    def _from_base(self, cfg, vocab):
        src = self.source(cfg)
        given = cfg.base_checkpoint or cfg.base_model  # what errors name: src may be an unpacked copy
        with untrusted.shown_as(src, given):
            return self._load_base(cfg, vocab, src, given)

    def _load_base(self, cfg, vocab, src, given):
        kw = hub.pretrained_kwargs(src)
        old = earlier_vocab(src) if os.path.isdir(src) else None
        info = {"base_model": src, "base_source": src, "licence": card.base_licence(src), "new_characters": []}
        if old:  # continuing an earlier fine-tune: its letters keep their ids and output rows
            vocab, info["new_characters"] = text_mod.extend(old, vocab)
            earlier = artifact.read_card(src)
            info.update(base_model=earlier.get("base_model") or src, licence=earlier.get("licence"),
                        continued_from=given)
            log(f"continuing an earlier model: vocabulary {len(old)} tokens, "
                f"{len(info['new_characters'])} new: {''.join(info['new_characters'])}")
        try:
            conf = AutoConfig.from_pretrained(src, **kw)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"load base model {src}: {e}") from None
        arch = arch_of(conf.model_type)
        pad = vocab[text_mod.specials(vocab)["pad"]]
        overrides = recipe_overrides(cfg, len(old) if old else len(vocab), arch, pad, keep_adapter=bool(old))
        try:
            model = CLASSES[arch].from_pretrained(src, ignore_mismatched_sizes=True,
                                                  **hub.pretrained_kwargs(src, weights=True), **overrides)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"load base model {src}: {e}") from None
        grow_head(model, len(vocab))
        try:
            fe = AutoFeatureExtractor.from_pretrained(src, **kw)
        except Exception:  # noqa: BLE001 - bare checkpoints ship without a preprocessor config
            fe = default_feature_extractor(arch)
        return model, fe, vocab, info

    def restore(self, cfg, state) -> Built:
        arch = state["arch"]
        model = CLASSES[arch](CONFIGS[arch].from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        if arch == "wav2vec2":
            model.freeze_feature_encoder()
        fe = EXTRACTORS[arch].from_dict(state["fe_config"])
        return Built(model, fe, state["vocab"], arch, dict(state.get("info") or {}))

    def weights(self, model) -> dict:
        return model.state_dict()

    def save_model(self, model, fe, tok, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        getattr(model, "module", model).save_pretrained(directory)
        fe.save_pretrained(directory)
        tok.save_pretrained(directory)

    def load_model(self, directory: str, device: str, _base=None):
        return load_trained(directory, device)

    def usage(self, info: dict) -> str:
        lm = "\n".join([
            "", "With the language model (beam search, `pip install pyctcdecode kenlm`):", "", "```python",
            "from pyctcdecode import BeamSearchDecoderCTC",
            "decoder = BeamSearchDecoderCTC.load_from_dir(\"asr_model\")",
            "log_probs = model(**inputs).logits.log_softmax(-1)[0].detach().numpy()",
            "print(decoder.decode(log_probs))", "```"]) if info.get("decoder") == "lm" else ""
        return "\n".join([
            "Unpack `asr_model.tar` into a folder (here `asr_model`); it loads with plain transformers:", "",
            "```python", "import soundfile as sf",
            "from transformers import AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer",
            "model = AutoModelForCTC.from_pretrained(\"asr_model\")",
            "features = AutoFeatureExtractor.from_pretrained(\"asr_model\")",
            "tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(\"asr_model\")",
            "audio, rate = sf.read(\"verse.wav\")  # mono, 16 kHz",
            "inputs = features(audio, sampling_rate=16000, return_tensors=\"pt\")",
            "print(tokenizer.batch_decode(model(**inputs).logits.argmax(-1)))", "```"]) + lm
