"""The n-gram language model: Kneser-Ney estimates, held-out verses kept out, beam search that
fixes a systematic acoustic error, and the packed layout transformers and pyctcdecode load."""
import json
import os
import random

import numpy as np
import pytest

from asr_common import emitted
from gpuworker_engines.ctc import lm, ngram, scoring, text
from gpuworker_engines.ctc.decode import Beam, Greedy, Labels
from gpuworker_engines.ctc.tinyhub import feature_extractor

WORDS = ("the seed tree green sheep feed field deep when men need bread seven river shepherd "
         "herd keep sleep street evening").split()


def _kenlm_context_sum(model, vocab, context):
    import kenlm
    state = kenlm.State()
    model.BeginSentenceWrite(state)
    for w in context:
        nxt = kenlm.State()
        model.BaseScore(state, w, nxt)
        state = nxt
    return sum(10 ** model.BaseScore(state, w, kenlm.State()) for w in vocab)


@pytest.mark.parametrize("order", [2, 3, 5])
def test_kneser_ney_distributions_sum_to_one_in_kenlm(order, tmp_path):
    import kenlm
    rng = random.Random(order)
    sents = [[rng.choice(WORDS[:rng.randint(4, len(WORDS))]) for _ in range(rng.randint(1, 9))]
             for _ in range(200)]
    path = str(tmp_path / "m.arpa")
    info = ngram.write_arpa(sents, order, path)
    assert info["order"] == order and len(info["ngrams"]) == order and info["words"] == len(WORDS)
    assert all(0 < d[0] < 1 and 0 < d[1] < 2 and 0 < d[2] < 3 for d in info["discounts"])
    model = kenlm.Model(path)
    vocab = WORDS + ["</s>", "<unk>"]
    for context in ([], ["the"], ["seed", "tree"], ["men", "men", "need", "bread"], ["never-seen"]):
        assert _kenlm_context_sum(model, vocab, context) == pytest.approx(1.0, abs=1e-4), context
    # what the corpus says often scores higher than what it never says
    common = " ".join(sents[0])
    assert model.score(common) > model.score(" ".join(reversed(WORDS)))


def _corpus(tmp_path, n_train=300, n_held=20):
    rng = random.Random(0)
    rows = [{"cell_id": f"c{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8))).capitalize() + "."}
            for i in range(n_train)]
    held = [{"cell_id": f"h{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8)))
             + " zebedee"} for i in range(n_held)]  # a word only the held-out verses have
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + held))
    return str(path), [r["text"] for r in held], {r["cell_id"] for r in held}


def _acoustic(sentence: str, vocab: dict, rng) -> np.ndarray:
    """CTC log-probabilities of a recogniser that hears every "e" as a slightly likelier "i"."""
    frames = []
    for ch in sentence.replace(" ", "|"):
        p = np.full(len(vocab), 1e-4)
        if ch == "e":
            p[vocab["i"]], p[vocab["e"]] = 0.5, 0.42
        else:
            p[vocab[ch]] = 0.9
        frames += [p / p.sum(), p / p.sum()]
        blank = np.full(len(vocab), 1e-4)
        blank[0] = 0.95 + 0.01 * rng.random()
        frames.append(blank / blank.sum())
    return np.log(np.array(frames, dtype=np.float32))


def test_lm_fixes_a_systematic_error_and_never_sees_held_out_verses(tmp_path):
    corpus, held_out, held_cells = _corpus(tmp_path)
    texts, excluded = lm.read_corpus(corpus, held_cells)
    assert excluded == len(held_cells) and len(texts) == 300
    arpa, unigrams, info = lm.build(texts, {}, 3, str(tmp_path / "lm"))
    assert "zebedee" not in unigrams and "zebedee" not in open(arpa).read()
    refs = [text.normalize(t) for t in held_out]
    vocab = text.build(refs + [text.normalize(t) for t in texts] + ["i"])[0]
    labels = Labels(vocab)
    rng = random.Random(1)
    lps = [_acoustic(r, vocab, rng) for r in refs]
    greedy = Greedy(labels)(lps)
    decoder = lm.make_decoder(labels, arpa, unigrams, alpha=0.5, beta=1.0)
    beam = Beam(decoder, labels, beam_width=32)(lps)
    cer_greedy, cer_lm = scoring.cer(greedy, refs), scoring.cer(beam, refs)
    print(f"held-out CER greedy {cer_greedy:.3f}, with LM {cer_lm:.3f}")
    assert "e" not in "".join(greedy) and cer_greedy > 0.15
    assert cer_lm < cer_greedy / 2, (cer_greedy, cer_lm, beam[:2])
    alpha, beta, tuned = lm.tune(decoder, labels, lps[:10], refs[:10], beam_width=16)
    assert (alpha, beta) in lm.GRID and tuned <= scoring.cer(Beam(decoder, labels, 16)(lps[:10]), refs[:10]) + 1e-9


def test_packed_layout_loads_in_transformers_and_pyctcdecode(tmp_path, capsys):
    from pyctcdecode import BeamSearchDecoderCTC
    from transformers import Wav2Vec2ProcessorWithLM

    corpus, held_out, held_cells = _corpus(tmp_path, n_held=3)
    texts, _ = lm.read_corpus(corpus, held_cells)
    arpa, unigrams, _ = lm.build(texts, {}, 3, str(tmp_path / "build"))
    refs = [text.normalize(t) for t in texts[:3]]
    vocab = text.build([text.normalize(t) for t in texts] + ["i"])[0]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    text.save(vocab, str(model_dir / "vocab.json"))
    tok = text.tokenizer(str(model_dir / "vocab.json"))
    tok.save_pretrained(str(model_dir))
    feature_extractor("w2v2bert").save_pretrained(str(model_dir))
    labels = Labels(vocab)
    lm.save(lm.make_decoder(labels, arpa, unigrams, 0.5, 1.0), str(model_dir))
    assert sorted(os.listdir(model_dir / lm.LM_DIR)) == ["attrs.json", "lm.arpa", "unigrams.txt"]
    assert (model_dir / lm.ALPHABET).exists()
    lps = [_acoustic(r, vocab, random.Random(2)) for r in refs]
    ours = Beam(lm.load(str(model_dir), labels), labels, 32)(lps)
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(str(model_dir))
    theirs = [processor.decode(labels.mask(x), beam_width=32).text for x in lps]
    plain = [BeamSearchDecoderCTC.load_from_dir(str(model_dir)).decode(labels.mask(x), beam_width=32) for x in lps]
    assert ours == theirs == plain and scoring.cer(ours, refs) < 0.05
    # a broken LM is not fatal: greedy decoding takes over, with a warning
    (model_dir / lm.LM_DIR / "lm.arpa").write_text("not an arpa file")
    capsys.readouterr()
    assert lm.load(str(model_dir), labels) is None
    assert any("language model not loaded" in e["message"] for e in emitted(capsys, "warning"))
