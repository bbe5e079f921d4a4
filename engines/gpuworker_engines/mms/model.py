"""The MMS adapter recipe: load the base, start from the language's published adapter (or a
fresh one), freeze everything but the adapters and the output head.

The trained model is stored as MMS stores its languages: `adapter.<lang>.safetensors` holds
every adapter layer and the output head, in the names transformers' `load_adapter` expects;
`adapter_config.json` says which base and adapter size it belongs to.

Everything read from an artifact or a base is data: adapters through safetensors,
JSON within the JSON caps (untrusted.py), bases through from_pretrained without
remote code (hub.pretrained_kwargs). Offline (HF_HUB_OFFLINE=1) the published
adapter of a language comes from the cache: the worker fetches
hf://<base>/adapter.<lang>.safetensors first, as an optional reference.
"""
import json
import os
import re

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoFeatureExtractor, Wav2Vec2ForCTC

from .. import hub, untrusted
from ..ctc import artifact, card
from ..ctc import text as text_mod
from ..ctc.head import grow_head
from ..ctc.tinyhub import feature_extractor, tiny_config
from ..ctc.trainer import Built
from ..events import EngineError, log, warning

ADAPTER_CONFIG = "adapter_config.json"
DROPOUTS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout")
NO_LANGUAGE = "und"  # ISO 639-3 "undetermined"


def adapter_file(lang: str) -> str:
    if not isinstance(lang, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", lang):
        raise EngineError(f"language {lang!r} is not a language code (letters, digits, - or _)")
    return f"adapter.{lang}.safetensors"


def published_vocab(src: str, lang: str) -> dict | None:
    """The base tokenizer's vocabulary for the language (MMS keys vocab.json by language)."""
    path = hub.repo_file(src, "vocab.json")
    if not path:
        return None
    vocab = untrusted.read_json(path, f"{src}: vocab.json")
    v = vocab.get(lang) if isinstance(vocab, dict) else None
    return v if text_mod.is_ctc_vocab(v) else None


def trainable_only(model) -> None:
    """The base frozen; the attention adapters and the output head learn."""
    model.freeze_base_model()
    for p in model._get_adapters().values():
        p.requires_grad = True


def fresh_adapter(model) -> None:
    """New adapter layers and head, as the model initialises them: layer norms at identity,
    biases zero, weights normal(0, initializer_range). (transformers' init_adapter_layers leaves
    loaded weights as they are.)"""
    with torch.no_grad():
        for name, p in model._get_adapters().items():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, model.config.initializer_range)


def apply_adapter(model, path: str) -> None:
    """What transformers' load_adapter does, from a file anywhere: checks the names, sizes the head."""
    try:
        state = load_file(path)
    except Exception as e:  # noqa: BLE001 - a safetensors file is data; a broken one fails cleanly
        raise EngineError(f"{path}: not a readable safetensors adapter ({type(e).__name__}: {e})") from None
    want = model._get_adapters()
    if set(state) != set(want):
        missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
        raise EngineError(f"adapter {path} does not fit the base: missing {missing[:3]}, unexpected {extra[:3]}")
    n = state["lm_head.weight"].shape[0]
    if n != model.config.vocab_size:
        model.lm_head = torch.nn.Linear(model.lm_head.in_features, n)
        model.config.vocab_size = n
    model.load_state_dict(state, strict=False)


def load_base(src: str, adapter_dim: int, vocab_size: int, pad_id: int, overrides: dict | None = None):
    kw = hub.pretrained_kwargs(src)
    try:
        conf = AutoConfig.from_pretrained(src, **kw)
        if conf.model_type != "wav2vec2":
            raise EngineError(f"the mms engine adapts wav2vec2 bases; {src} is a {conf.model_type!r} model")
        model = Wav2Vec2ForCTC.from_pretrained(
            src, ignore_mismatched_sizes=True, adapter_attn_dim=adapter_dim, vocab_size=vocab_size,
            pad_token_id=pad_id, **hub.pretrained_kwargs(src, weights=True), **(overrides or {}))
    except EngineError:
        raise
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"load base model {src}: {e}") from None
    try:
        fe = AutoFeatureExtractor.from_pretrained(src, **kw)
    except Exception:  # noqa: BLE001
        fe = feature_extractor("wav2vec2")
    return model, fe


class Recipe:
    """Adapter fine-tuning of an MMS-style base (see ctc/trainer.py for the interface)."""

    engine, title = "mms", "MMS adapter"

    def __init__(self):
        self._earlier = None

    def arch(self, cfg) -> str:
        return "wav2vec2"

    def _earlier_dir(self, cfg) -> str | None:
        """An earlier mms artifact to continue, unpacked."""
        if not cfg.base_checkpoint:
            return None
        if self._earlier is None:
            into = os.path.join(os.path.abspath(cfg.output_dir), "base_checkpoint")
            self._earlier = artifact.unpack(cfg.base_checkpoint, into)
            if not os.path.exists(os.path.join(self._earlier, ADAPTER_CONFIG)):
                raise EngineError(f"{cfg.base_checkpoint} is not an mms model (no {ADAPTER_CONFIG})")
        return self._earlier

    def build(self, cfg, texts: list[str]) -> Built:
        earlier = self._earlier_dir(cfg)
        if earlier:  # errors about its files name the artifact the config gave
            with untrusted.shown_as(earlier, cfg.base_checkpoint):
                return self._build(cfg, texts, earlier)
        return self._build(cfg, texts, None)

    def _build(self, cfg, texts: list[str], earlier: str | None) -> Built:
        vocab, dropped = text_mod.build(texts, cfg.min_char_count)
        if dropped:
            warning(f"{len(dropped)} rare characters map to the unknown token: {''.join(dropped)}")
        lang = cfg.language or NO_LANGUAGE
        overrides = dict(ctc_loss_reduction="mean", ctc_zero_infinity=True, layerdrop=cfg.layerdrop,
                         mask_time_prob=cfg.mask_time_prob, **{k: cfg.dropout for k in DROPOUTS})
        if cfg.size == "tiny":
            src, start, old = None, "fresh", None
            model = Wav2Vec2ForCTC(tiny_config("wav2vec2", len(vocab), adapter_attn_dim=8))
            for k, v in overrides.items():
                setattr(model.config, k, v)
            fe = feature_extractor("wav2vec2")
        else:
            meta, src = {}, cfg.base_model
            if earlier:  # an earlier adapter keeps its base
                meta = read_adapter_config(earlier)
                src = recorded_base(meta, cfg.base_model, _config_path(earlier)) or cfg.base_model
            try:
                base_conf = AutoConfig.from_pretrained(src, **hub.pretrained_kwargs(src))
            except EngineError:
                raise
            except Exception as e:  # noqa: BLE001
                raise EngineError(f"load base model {src}: {e}") from None
            published_dim = getattr(base_conf, "adapter_attn_dim", None)
            dim = meta.get("adapter_attn_dim") or published_dim or cfg.adapter_attn_dim
            model, fe = load_base(src, dim, len(vocab), 0, overrides)
            published = hub.repo_file(src, adapter_file(lang)) if published_dim and not earlier else None
            if earlier:
                start, old = "continued", text_mod.load(os.path.join(earlier, "vocab.json"))
                apply_adapter(model, os.path.join(earlier, adapter_file(meta["language"])))
            elif published:
                start, old = "published", published_vocab(src, lang)
                apply_adapter(model, published)
                if old is None or len(old) != model.config.vocab_size:
                    raise EngineError(f"{src} has an adapter for {lang} but no matching vocabulary for it")
            else:
                start, old = "fresh", None
                fresh_adapter(model)
        new_chars = []
        if old:  # the adapter's letters keep their ids and output rows
            vocab, new_chars = text_mod.extend(old, vocab)
            grow_head(model, len(vocab))
        elif model.lm_head.out_features != len(vocab):
            model.lm_head = torch.nn.Linear(model.lm_head.in_features, len(vocab))
            model.config.vocab_size = len(vocab)
        model.config.pad_token_id = vocab[text_mod.specials(vocab)["pad"]]
        trainable_only(model)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"mms: {start} adapter for {lang} on {src or 'a tiny random base'}, {n_train / 1e6:.2f}M trained "
            f"parameters, {len(new_chars)} new letters")
        model.target_lang, model.mms_base = lang, src
        info = {"arch": "wav2vec2", "base_model": src or "tiny (random)", "base_source": src, "language": lang,
                "licence": card.base_licence(src) if src else None, "adapter": start, "new_characters": new_chars,
                "adapter_attn_dim": model.config.adapter_attn_dim,
                "hyperparameters": {"adapter_attn_dim": model.config.adapter_attn_dim,
                                    "trainable_parameters": n_train, "adapter_start": start}}
        return Built(model, fe, vocab, "wav2vec2", info)

    def restore(self, cfg, state) -> Built:
        info = dict(state.get("info") or {})
        conf = state["model_config"]
        base = recorded_base({"base_model": info.get("base_source")}, cfg.base_model, "the checkpoint's info")
        if base:
            checked_sizes(conf, "the checkpoint's model_config")
            keep = ("mask_time_prob", "layerdrop", "ctc_zero_infinity", "ctc_loss_reduction", *DROPOUTS)
            model, fe = load_base(base, conf["adapter_attn_dim"], conf["vocab_size"],
                                  conf["pad_token_id"], {k: conf[k] for k in keep if k in conf})
        else:
            from transformers import Wav2Vec2Config
            model, fe = Wav2Vec2ForCTC(Wav2Vec2Config.from_dict(conf)), feature_extractor("wav2vec2")
        missing = set(model._get_adapters()) - set(state["model"])
        if missing:
            raise EngineError(f"checkpoint lacks adapter weights: {sorted(missing)[:3]}")
        model.load_state_dict(state["model"], strict=not base)
        model.target_lang, model.mms_base = info.get("language") or NO_LANGUAGE, base
        trainable_only(model)
        return Built(model, fe, state["vocab"], "wav2vec2", info)

    def weights(self, model) -> dict:
        """The adapter and head; everything for a tiny base, which exists nowhere else."""
        if getattr(model, "mms_base", None) is None:
            return model.state_dict()
        return {k: v.detach().clone() for k, v in model._get_adapters().items()}

    def save_model(self, model, fe, tok, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        m = getattr(model, "module", model)
        lang = m.target_lang or NO_LANGUAGE
        adapters = {k: v.detach().contiguous() for k, v in m._get_adapters().items()}
        save_file(adapters, os.path.join(directory, adapter_file(lang)))
        if m.mms_base is None:  # a tiny random base travels with its adapter
            m.save_pretrained(directory)
        fe.save_pretrained(directory)
        tok.save_pretrained(directory)
        with open(os.path.join(directory, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
            json.dump({"language": lang, "base_model": m.mms_base, "adapter_attn_dim": m.config.adapter_attn_dim,
                       "vocab_size": m.config.vocab_size, "pad_token_id": m.config.pad_token_id}, f, indent=1)

    def load_model(self, directory: str, device: str, base: str | None = None):
        meta = read_adapter_config(directory)
        # no recorded base: a tiny one, inside
        base = base or recorded_base(meta, None, _config_path(directory)) or directory
        model, fe = load_base(base, meta["adapter_attn_dim"], meta["vocab_size"], meta["pad_token_id"])
        apply_adapter(model, os.path.join(directory, adapter_file(meta["language"])))
        model.target_lang, model.mms_base = meta["language"], base
        tok = text_mod.tokenizer(os.path.join(directory, "vocab.json"))
        return model.to(device).eval(), fe, tok

    def usage(self, info: dict) -> str:
        lang, base = info.get("language") or NO_LANGUAGE, info.get("base_model")
        return "\n".join([
            f"The model is an adapter for `{base}`: `{adapter_file(lang)}` holds its adapter layers and "
            "output head in the layout of MMS's own languages, so transformers' adapter API loads it. "
            "Put the file beside a local copy of the base "
            f"(`huggingface-cli download {base} --local-dir base`) and:", "",
            "```python", "import soundfile as sf",
            "from transformers import AutoFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC",
            f"model = Wav2Vec2ForCTC.from_pretrained(\"base\", target_lang=\"{lang}\")  # or model.load_adapter(\"{lang}\")",
            "features = AutoFeatureExtractor.from_pretrained(\"asr_model\")  # the unpacked asr_model.tar",
            "tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(\"asr_model\")",
            "audio, rate = sf.read(\"verse.wav\")  # mono, 16 kHz",
            "inputs = features(audio, sampling_rate=16000, return_tensors=\"pt\")",
            "print(tokenizer.batch_decode(model(**inputs).logits.argmax(-1)))", "```"])


# adapter_config.json comes with an artifact from a project: its sizes are bounded so that a
# planted one cannot make the model exhaust memory
_SIZES = {"adapter_attn_dim": (1, 4096), "vocab_size": (2, 1 << 17), "pad_token_id": (0, 1 << 17)}


def read_adapter_config(directory: str) -> dict:
    """The artifact's adapter_config.json, its language and sizes checked."""
    path = _config_path(directory)
    if not os.path.exists(path):
        raise EngineError(f"missing {path}")
    meta = untrusted.read_json(path)
    if not isinstance(meta, dict):
        raise EngineError(f"{path}: not a JSON object")
    adapter_file(meta.get("language"))
    return checked_sizes(meta, path)


def checked_sizes(d: dict, where: str) -> dict:
    """d's adapter size, vocabulary size and padding id, checked before a model is sized by them."""
    for key, (lo, hi) in _SIZES.items():
        v = d.get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise EngineError(f"{where}: {key} must be an integer from {lo} to {hi}, not {v!r}")
    if d["pad_token_id"] >= d["vocab_size"]:
        raise EngineError(f"{where}: pad_token_id {d['pad_token_id']} is outside the vocabulary "
                          f"({d['vocab_size']} tokens)")
    return d


def recorded_base(meta: dict, job_base: str | None, where: str) -> str | None:
    """The base an artifact records, taken only when it is a hub repository id or the job's own
    base: a recorded local path could name any folder of the machine."""
    base = meta.get("base_model")
    if base is None or base == job_base:
        return base
    if not isinstance(base, str) or not hub.is_repo_id(base) or os.path.exists(base):
        raise EngineError(f"{where}: base_model {base!r} is not a hub repository id (owner/name); "
                          "name the base in the job's base_model")
    return base


def _config_path(directory: str) -> str:
    return os.path.join(directory, ADAPTER_CONFIG)
