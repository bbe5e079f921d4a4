"""Tiny random models laid out like hub snapshots, for tests and CI-sized end-to-end runs.

    python -m gpuworker_engines.ctc.tinyhub --out DIR --architecture w2v2bert|wav2vec2
                                            [--adapter-languages xyz,abc] [--seed N]

w2v2bert      like facebook/w2v-bert-2.0: a pretrained Wav2Vec2BertModel (no CTC head),
              config.json, model.safetensors, preprocessor_config.json, README.md
wav2vec2      like an XLS-R / MMS pretrained base: Wav2Vec2ForPreTraining, same files
wav2vec2 with --adapter-languages
              like facebook/mms-1b-all: a Wav2Vec2ForCTC with attention adapters (the first
              language's adapter and head in the main weights), adapter.<lang>.safetensors
              per language, and the tokenizer files (vocab.json keyed by language)
Any dimension is tiny; the layout and the classes are the real ones.
"""
import argparse
import json
import os
import string

import torch
from transformers import (SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel, Wav2Vec2Config,
                          Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                          Wav2Vec2ForPreTraining)

from . import SAMPLE_RATE

LICENCES = {"w2v2bert": "mit", "wav2vec2": "apache-2.0", "mms": "cc-by-nc-4.0"}
MMS_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "|"]


def tiny_config(arch: str, vocab_size: int = 32, add_adapter: bool = False, hidden: int = 48,
                adapter_attn_dim: int | None = None):
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
        feat_extract_norm="layer", do_stable_layer_norm=True, pad_token_id=0,
        num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16,
        adapter_attn_dim=adapter_attn_dim)


def feature_extractor(arch: str):
    if arch == "w2v2bert":
        # as published with facebook/w2v-bert-2.0
        return SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SAMPLE_RATE,
                                           padding_value=1.0, stride=2)
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def language_vocab(lang: str) -> dict[str, int]:
    """MMS-style: specials first, then the letters (every language here writes a-z and ')."""
    return {t: i for i, t in enumerate(MMS_SPECIALS + list(string.ascii_lowercase) + ["'"])}


def _readme(out: str, licence: str, what: str) -> None:
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"---\nlicense: {licence}\n---\n# tiny {what}\n\nRandom weights, hub layout, for tests.\n")


def write(out: str, architecture: str, adapter_languages: list[str] | None = None, seed: int = 0) -> dict:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    if adapter_languages:
        if architecture != "wav2vec2":
            raise ValueError("adapter languages need the wav2vec2 architecture (MMS)")
        return _mms(out, adapter_languages)
    if architecture == "w2v2bert":
        model = Wav2Vec2BertModel(tiny_config("w2v2bert"))
    else:
        model = Wav2Vec2ForPreTraining(tiny_config("wav2vec2"))
    model.save_pretrained(out)
    feature_extractor(architecture).save_pretrained(out)
    _readme(out, LICENCES[architecture], f"{architecture} base")
    return {"path": out, "architecture": architecture, "files": sorted(os.listdir(out))}


def _mms(out: str, languages: list[str]) -> dict:
    from safetensors.torch import save_file

    vocabs = {lang: language_vocab(lang) for lang in languages}
    model = Wav2Vec2ForCTC(tiny_config("wav2vec2", vocab_size=len(vocabs[languages[0]]), adapter_attn_dim=8))
    adapters = {}
    for lang in reversed(languages):  # the first language ends up in the main weights
        model.lm_head = torch.nn.Linear(model.config.hidden_size, len(vocabs[lang]))
        model.config.vocab_size = len(vocabs[lang])
        for name, p in model._get_adapters().items():
            with torch.no_grad():
                p.normal_(0, 0.02) if p.dim() > 1 else p.uniform_(-0.01, 0.01)
        adapters[lang] = {k: v.detach().clone().contiguous() for k, v in model._get_adapters().items()}
    model.save_pretrained(out)
    for lang, state in adapters.items():
        save_file(state, os.path.join(out, f"adapter.{lang}.safetensors"))
    feature_extractor("wav2vec2").save_pretrained(out)
    vocab_path = os.path.join(out, "vocab.json")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocabs, f, ensure_ascii=False)
    tok = Wav2Vec2CTCTokenizer(vocab_path, target_lang=languages[0], unk_token="<unk>", pad_token="<pad>",
                               bos_token="<s>", eos_token="</s>", word_delimiter_token="|")
    tok.save_pretrained(out)
    _readme(out, LICENCES["mms"], "MMS-style multilingual base with adapters")
    return {"path": out, "architecture": "wav2vec2", "adapter_languages": languages,
            "files": sorted(os.listdir(out))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gpuworker_engines.ctc.tinyhub", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--architecture", choices=("w2v2bert", "wav2vec2"), required=True)
    ap.add_argument("--adapter-languages", default="", help="comma-separated ISO 639-3 codes (MMS layout)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    langs = [x.strip() for x in args.adapter_languages.split(",") if x.strip()]
    print(json.dumps(write(args.out, args.architecture, langs or None, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
