"""Units of the shared CTC code: text and vocabulary in five scripts, scoring, splits, the
recipe defaults, decoding without special tokens, chunked and batched inference."""
import random
import unicodedata

import numpy as np
import pytest
import torch

from asr_common import SAMPLE_RATE  # noqa: F401 - puts the engines on sys.path
from gpuworker_engines.ctc import card, data, infer, scoring, text
from gpuworker_engines.ctc.decode import Greedy, Labels
from gpuworker_engines.ctc.tinyhub import feature_extractor, tiny_config
from gpuworker_engines.events import EngineError
from gpuworker_engines.training import Plan
from gpuworker_engines.w2v2bert.config import TrainConfig
from gpuworker_engines.w2v2bert.model import CLASSES

torch.set_num_threads(1)
ZWNJ, ZWJ = "\u200c", "\u200d"

VERSES = {
    "persian": "در ابتدا کلمه بود و کلمه نزد خُدا بود، و کتاب\u200cها را می\u200cخوانم.",
    "devanagari": "आदि में वचन था, और वचन परमेश्वर के साथ था। क्षत्रिय",
    "malayalam": "ആദിയിൽ വചനം ഉണ്ടായിരുന്നു; അവന\u0d4d\u200d വചനം ദൈവത്തോടുകൂടെ ആയിരുന്നു.",
    "geez": "በመጀመሪያ፡ቃል፡ነበረ፤ ቃልም በእግዚአብሔር ዘንድ ነበረ። ፩",
    "thai": "ในปฐมกาลพระวาทะทรงดำรงอยู่ และพระวาทะทรงสถิตอยู่กับพระเจ้า",
}


def _letters(s: str) -> list[str]:
    return [c for c in s if unicodedata.category(c)[0] in "LM" or c in (ZWNJ, ZWJ)]


# --- text -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(VERSES))
def test_cleaning_keeps_every_letter_of_every_script(script):
    verse = VERSES[script]
    norm = text.normalize(verse)
    assert _letters(norm) == _letters(unicodedata.normalize("NFC", verse).lower())
    vocab, dropped = text.build([norm])
    assert not dropped and text.DELIM in vocab
    assert all(c in vocab for c in norm.replace(" ", ""))
    path = f"/tmp/vocab-{script}-{random.random()}.json"
    text.save(vocab, path)
    tok = text.tokenizer(path)
    ids = tok(norm).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, group_tokens=False) == norm
    # CTC frames for the ids (a blank between letters) decode back to the verse
    labels = Labels(vocab)
    frames = [i for t in ids for i in (t, labels.blank)]
    lp = np.full((len(frames), len(vocab)), -20.0, dtype=np.float32)
    lp[np.arange(len(frames)), frames] = 0
    assert Greedy(labels)([lp]) == [norm]


def test_zero_width_joiners_stay_inside_words():
    assert text.normalize("کتاب\u200cها") == "کتاب\u200cها"
    assert ZWNJ in text.build([text.normalize(VERSES["persian"])])[0]
    assert ZWJ in text.build([text.normalize(VERSES["malayalam"])])[0]
    assert len(text.normalize(VERSES["persian"]).split()) == 13


def test_cleaning_drops_controls_bom_and_direction_marks_only():
    assert text.normalize("\ufeffword\x07s\u200f here\u202a!") == "words here"
    assert text.normalize("tab\tand\nnewline|pipe") == "tab and newline pipe"
    assert text.normalize("Hello, World!  12 don't") == "hello world 12 don't"
    assert text.normalize("A-b 3x", remove_numbers=True) == "a b x"
    assert text.normalize("Keep Case.", lowercase=False, remove_punctuation=False) == "Keep Case."
    assert text.normalize("\ue000private") == "\ue000private"  # private-use letters of minority fonts stay


def test_vocab_build_extend_and_specials():
    v, dropped = text.build(["aab a", "bbq"], min_char_count=2)
    assert list(v)[:3] == ["[PAD]", "[UNK]", "|"] and dropped == ["q"] and {"a", "b"} <= set(v)
    grown, added = text.extend(v, text.build(["zab"])[0])
    assert added == ["z"] and grown["z"] == len(v) and all(grown[k] == i for k, i in v.items())
    mms = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5}
    assert text.specials(mms) == {"pad": "<pad>", "unk": "<unk>", "delim": "|", "others": ["<s>", "</s>"]}
    grown, added = text.extend(mms, v)  # our [PAD]/[UNK] are not letters to add
    assert added == ["b"] and "[PAD]" not in grown
    assert text.is_ctc_vocab(mms) and not text.is_ctc_vocab({"eng": mms})


# --- decoding never emits special tokens -------------------------------------------------------

def test_greedy_never_emits_unknown_or_special_tokens():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6}
    labels = Labels(vocab)
    lp = np.full((6, 7), -9.0, dtype=np.float32)
    lp[:, 3] = 0.0  # the unknown token wins every frame ...
    lp[:, 1] = -0.5  # ... then <s> ...
    lp[[0, 1, 3, 4], 5] = -1.0  # ... then letters
    lp[[2, 5], 0] = -1.0
    assert Greedy(labels)([lp]) == ["aa"]
    assert labels.clean("x [UNK] y<unk>z \u2047") == "x y z"


def test_scoring_and_edit_distance():
    assert scoring.cer(["abc"], ["abc"]) == 0
    assert scoring.cer(["abd", ""], ["abc", "xy"]) == pytest.approx(3 / 5)
    assert scoring.wer(["a b c"], ["a x c d"]) == pytest.approx(2 / 4)
    rng = random.Random(3)

    def slow(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]

    for _ in range(300):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice("abd ") for _ in range(rng.randint(0, 90)))
        assert scoring.edit_distance(a, b) == slow(a, b)


# --- data, schedule, recipe -----------------------------------------------------------------

def test_three_way_split():
    items = list(range(100))
    tr, va, te = data.split(items, 0.1, 0.1, seed=5)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    assert sorted(tr + va + te) == items and (tr, va, te) == data.split(items, 0.1, 0.1, seed=5)
    assert [len(x) for x in data.split(list(range(4)), 0.1, 0.1, 1)] == [2, 1, 1]
    assert [len(x) for x in data.split(list(range(3)), 0.1, 0.1, 1)] == [3, 0, 0]
    assert [len(x) for x in data.split(list(range(10)), 0.0, 0.1, 1)] == [9, 0, 1]
    assert [len(x) for x in data.split(list(range(6)), 0.4, 0.4, 1)] == [3, 2, 1]


def test_length_grouped_batches():
    rng = random.Random(1)
    durs = [rng.uniform(1, 10) for _ in range(100)]
    a = data.epoch_batches(durs, 8, 3, 0, True)
    assert a == data.epoch_batches(durs, 8, 3, 0, True) and a != data.epoch_batches(durs, 8, 3, 1, True)
    assert sorted(i for b in a for i in b) == list(range(100))
    spread = np.mean([np.ptp([durs[i] for i in b]) for b in a if len(b) == 8])
    rand = np.mean([np.ptp([durs[i] for i in b]) for b in data.epoch_batches(durs, 8, 3, 0, False)])
    assert spread < rand / 2


def test_recipe_defaults_per_architecture():
    c = TrainConfig.from_dict({"dataset": "d", "output_dir": "o"})
    hp = c.resolve("w2v2bert")
    assert (hp["learning_rate"], hp["batch_size"], hp["gradient_accumulation_steps"],
            hp["warmup_steps"], hp["add_adapter"], hp["dropout"], hp["layerdrop"], hp["mask_time_prob"]) == \
        (5e-5, 16, 2, 500, True, 0.0, 0.0, 0.0)
    hp = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "learning_rate": None}).resolve("wav2vec2")
    assert (hp["learning_rate"], hp["mask_time_prob"], hp["batch_size"] * hp["gradient_accumulation_steps"]) == \
        (3e-4, 0.05, 32)
    # what the worker sends wins; accumulation makes up the recipe's effective batch
    hp = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "batch_size": 4,
                                "learning_rate": 1e-5}).resolve("w2v2bert")
    assert (hp["batch_size"], hp["gradient_accumulation_steps"], hp["learning_rate"]) == (4, 8, 1e-5)
    # warmup 0 is no warmup, not "the recipe's"; a size-tiny job gets the tiny recipe
    hp = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "warmup_steps": 0}).resolve("w2v2bert")
    assert hp["warmup_steps"] == 0
    tiny = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "size": "tiny"})
    hp = tiny.resolve("w2v2bert")
    assert (hp["learning_rate"], hp["batch_size"], hp["gradient_accumulation_steps"], hp["warmup_steps"]) == \
        (3e-3, 8, 1, 10)
    assert tiny.transmorgrifier.iterations == 30
    # on two processes each accumulates half: the same effective batch
    c = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "batch_size": 4})
    c.resolve("w2v2bert")
    plan = Plan(c.batch_size, c.gradient_accumulation_steps, 2)
    assert (plan.per_process, plan.effective_batch) == (4, 32)
    c = TrainConfig.from_dict({"dataset": "d", "output_dir": "o", "transmorgrifier": {"iterations": 5},
                               "text_normalization": {"lowercase": None}})
    assert c.transmorgrifier.iterations == 5 and c.text_normalization.lowercase is True
    assert (c.lm.enabled, c.lm.order) == (True, 4) and (c.val_split, c.test_split) == (0.1, 0.1)
    for bad, match in [({"dataset": ""}, "dataset"), ({"size": "huge"}, "size"),
                       ({"val_split": 0.6, "test_split": 0.5}, "sum"), ({"lm": {"order": 9}}, "lm.order"),
                       ({"layerdrop": 1.5}, "layerdrop"), ({"save_interval": 5}, "unknown key.*'save_interval'"),
                       ({"lm": {"ordr": 3}}, "'lm.ordr'")]:
        with pytest.raises(EngineError, match=match):
            TrainConfig.from_dict({"dataset": "d", "output_dir": "o", **bad})


def test_base_licence(tmp_path):
    assert card.base_licence("facebook/w2v-bert-2.0") == "mit"
    assert card.base_licence("facebook/mms-1b-all") == "cc-by-nc-4.0"
    assert card.base_licence("someone/else") is None
    (tmp_path / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\n---\n# x\n")
    assert card.base_licence(str(tmp_path)) == "apache-2.0"


# --- inference: chunks, batches, out-of-memory, precision ----------------------------------------

def _model(arch):
    torch.manual_seed(0)
    return CLASSES[arch](tiny_config(arch, 12, add_adapter=arch == "w2v2bert")).eval(), feature_extractor(arch)


@pytest.mark.parametrize("arch", ["w2v2bert", "wav2vec2"])
def test_long_clips_are_chunked_into_tiling_windows(arch):
    model, fe = _model(arch)
    tr = infer.Transcriber(model, fe, "cpu", infer.Options(chunk_seconds=2.0, stride_seconds=0.5))
    n = int(7.3 * SAMPLE_RATE)
    wins = tr.windows(n)
    assert len(wins) > 3 and wins[0][2] == 0 and wins[-1][1] == wins[-1][3] == n
    assert all(a[3] == b[2] for a, b in zip(wins, wins[1:]))  # kept parts tile the clip
    assert all(e - s <= tr.window for s, e, _, _ in wins)
    wave = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    whole = infer.Transcriber(model, fe, "cpu", infer.Options(chunk_seconds=30)).logprobs([wave])[0]
    chunked = tr.logprobs([wave])[0]
    assert abs(len(chunked) - len(whole)) <= 1 and chunked.shape[1] == 12
    assert np.allclose(np.exp(chunked).sum(-1), 1, atol=1e-4)


def test_batches_bounded_by_audio_seconds_and_oom_halves_them(monkeypatch, capsys):
    model, fe = _model("wav2vec2")
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(int(s * SAMPLE_RATE)).astype(np.float32) * 0.1 for s in (1, 2, 1.5, 0.5, 2, 1)]
    tr = infer.Transcriber(model, fe, "cpu", infer.Options(batch_seconds=4.0))
    sizes, real = [], tr._forward

    def fake(batch):
        sizes.append(len(batch))
        if len(batch) > 1 and max(len(w) for w in batch) * len(batch) > 2.5 * SAMPLE_RATE:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(batch)

    monkeypatch.setattr(tr, "_forward", fake)
    out = tr.logprobs(waves)
    single = [infer.Transcriber(model, fe, "cpu", infer.Options()).logprobs([w])[0] for w in waves]
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(out, single))
    assert sizes[0] == 2  # 4 s of audio per batch: two 2-s clips
    warnings = [e["message"] for e in _events(capsys) if e["event"] == "warning"]
    assert warnings and "out of memory" in warnings[0] and tr.batch_samples < 4 * SAMPLE_RATE


def test_reduced_precision_path():
    model, fe = _model("w2v2bert")
    wave = np.random.default_rng(2).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    ref = infer.Transcriber(model, fe, "cpu", infer.Options(precision="fp32")).logprobs([wave])[0]
    tr = infer.Transcriber(model, fe, "cpu", infer.Options(precision="bf16"))
    assert next(tr.model.parameters()).dtype == torch.bfloat16
    low = tr.logprobs([wave])[0]
    assert low.dtype == np.float32 and low.shape == ref.shape and np.abs(low - ref).max() < 0.5
    assert infer.inference_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(EngineError, match="chunk_seconds"):
        infer.Options.from_dict({"chunk_seconds": 10, "stride_seconds": 5})


def _events(capsys):
    import json
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
