"""After fine-tuning: held-out figures of the best model, the language model, post-correction,
the model card and the packed artifact.

Validation chooses (the best epoch, LM weights, whether the LM and the corrector are
kept); the test split is only ever reported.
"""
import os
import time
from dataclasses import dataclass

from .. import events
from ..events import EngineError
from . import SAMPLE_RATE, artifact, card, corrector, infer, lm, scoring
from .decode import Beam, Greedy, Labels
from .text import normalize


@dataclass
class Run:
    best_dir: str
    best: dict
    train: list
    val: list
    test: list
    skipped: list
    device: object
    hyperparameters: dict
    info: dict
    stop: object


def finish(recipe, cfg, run: Run) -> dict:
    if not os.path.isdir(run.best_dir):
        raise EngineError(f"best model folder missing: {run.best_dir} (was output_dir changed on resume?)")
    norm = cfg.text_normalization.to_dict()
    model, fe, tok = recipe.load_model(run.best_dir, str(run.device), run.info.get("base_source"))
    labels = Labels(tok.get_vocab())
    tr = infer.Transcriber(model, fe, run.device, infer.Options(precision=cfg.precision))
    lp_val, lp_test = tr.all([e.audio for e in run.val]), tr.all([e.audio for e in run.test])
    refs_val, refs_test = [e.text for e in run.val], [e.text for e in run.test]
    greedy = Greedy(labels)
    m = {f"{split}_{metric}_{kind}": None for split in ("val", "test") for metric in ("cer", "wer")
         for kind in ("lm", "corrected")}
    m.update({**_scores("val", greedy(lp_val), refs_val), **_scores("test", greedy(lp_test), refs_test)})

    lm.remove(run.best_dir)  # from an earlier, interrupted finishing step
    decoder, lm_info = greedy, None
    if cfg.lm.enabled:
        beam, lm_info = _language_model(cfg, run, labels, lp_val, refs_val, m)
        if beam is not None:
            m.update(_scores("test", beam(lp_test), refs_test, "_lm"))
            m.update(_scores("val", beam(lp_val), refs_val, "_lm"))
            lm_info["kept"] = not run.val or m["val_cer_lm"] <= m["val_cer"]
            if lm_info["kept"]:
                lm.save(beam.decoder, run.best_dir)
                decoder = beam
            else:
                events.warning(f"language model left out: it raised validation CER from "
                               f"{m['val_cer']:.3f} to {m['val_cer_lm']:.3f}")

    tm_info = None
    tm_path = os.path.join(run.best_dir, corrector.FILENAME)
    if os.path.exists(tm_path):
        os.unlink(tm_path)
    if cfg.transmorgrifier.enabled:
        tm_info = _post_correction(cfg.transmorgrifier, run, tr, decoder, lp_val, lp_test, norm, m, tm_path)

    card_info = {
        "format": 2, "engine": recipe.engine, "arch": run.info.get("arch"), "sample_rate": SAMPLE_RATE,
        "base_model": run.info.get("base_model"), "licence": run.info.get("licence"),
        "language": cfg.language, "text_normalization": norm, "vocab_size": len(tok),
        "decoder": decoder.name, "post_correction": bool(tm_info and tm_info["kept"]),
        "best_epoch": run.best.get("epoch"), "metrics": m,
        "metrics_note": "CER/WER on normalised text; validation chooses, test is held out",
        "train_items": len(run.train), "val_items": len(run.val), "test_items": len(run.test),
        "train_hours": round(sum(e.duration for e in run.train) / 3600, 4), "skipped_items": len(run.skipped),
        "hyperparameters": run.hyperparameters, "lm": lm_info, "transmorgrifier": tm_info,
        "config": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{k: v for k, v in run.info.items() if k not in ("base_source", "hyperparameters")},
    }
    artifact.write_text(os.path.join(run.best_dir, artifact.README), card.render({
        **card_info, "title": f"{recipe.title} speech recognition"
        + (f" ({cfg.language})" if cfg.language else ""), "usage": recipe.usage(card_info)}))
    path = artifact.pack(run.best_dir, os.path.join(os.path.abspath(cfg.output_dir), artifact.NAME), card_info)
    events.emit("checkpoint", path=path, epoch=cfg.epochs, step=None, kind="final")
    return {"artifact": path, "best_epoch": run.best.get("epoch"), **m,
            "train_items": len(run.train), "val_items": len(run.val), "test_items": len(run.test),
            "hyperparameters": run.hyperparameters, "new_characters": run.info.get("new_characters", []),
            "decoder": decoder.name, "lm": lm_info, "transmorgrifier": tm_info,
            "post_corrected": card_info["post_correction"], "skipped": run.skipped,
            "base_model": run.info.get("base_model")}


def _scores(split: str, hyps, refs, suffix: str = "") -> dict:
    if not refs:
        return {f"{split}_cer{suffix}": None, f"{split}_wer{suffix}": None}
    return {f"{split}_cer{suffix}": scoring.cer(hyps, refs), f"{split}_wer{suffix}": scoring.wer(hyps, refs)}


def _language_model(cfg, run: Run, labels, lp_val, refs_val, m) -> tuple:
    """(beam decoder or None, info). Held-out cells never reach the LM text."""
    t0 = time.monotonic()
    held_out = {e.cell_id for e in run.val + run.test}
    if cfg.lm_corpus:
        texts, excluded = lm.read_corpus(cfg.lm_corpus, held_out)
        source = "lm_corpus"
    else:
        texts, excluded, source = [e.original for e in run.train], len(held_out), "training verses"
    work = os.path.join(os.path.abspath(cfg.output_dir), "lm")
    order = cfg.lm.order
    try:
        arpa, unigrams, info = lm.build(texts, cfg.text_normalization.to_dict(), order, work)
        alpha, beta = cfg.lm.alpha, cfg.lm.beta
        decoder = lm.make_decoder(labels, arpa, unigrams, 0.5 if alpha is None else alpha,
                                  1.5 if beta is None else beta)
    except EngineError as e:
        events.warning(f"language model not built: {e}")
        return None, {"kept": False, "reason": str(e)}
    beam_width = cfg.lm.beam_width
    tuned = None
    if (alpha is None or beta is None) and run.val:
        alpha, beta, _ = tuned = lm.tune(decoder, labels, lp_val, refs_val)
    else:
        alpha, beta = (0.5 if alpha is None else alpha), (1.5 if beta is None else beta)
        decoder.reset_params(alpha=alpha, beta=beta)
    info.update(source=source, excluded_cells=excluded, alpha=alpha, beta=beta, beam_width=beam_width,
                tuned_on_validation=tuned is not None, seconds=round(time.monotonic() - t0, 2))
    events.log(f"language model: {order}-gram from {info['sentences']} verses of the {source} "
               f"({excluded} held-out verses left out), alpha {alpha} beta {beta}, {info['seconds']}s")
    return Beam(decoder, labels, beam_width), info


def _post_correction(opts, run: Run, tr, decoder, lp_val, lp_test, norm, m, tm_path) -> dict:
    if run.stop:
        raise events.Interrupted("stopped before post-correction training")
    t0 = time.monotonic()
    out_train = [""] * len(run.train)
    for i, lp in tr.stream([e.audio for e in run.train]):
        out_train[i] = decoder([lp])[0]
    out_val, out_test = decoder(lp_val), decoder(lp_test)
    events.log(f"post-correction: training on {len(run.train)} verse pairs, early stopping on "
               f"{len(run.val)} validation pairs, at most {opts.iterations} iterations per model")
    summary = corrector.train(list(zip(out_train, [e.original for e in run.train])),
                              list(zip(out_val, [e.original for e in run.val])), opts, tm_path, run.stop)
    info = {"kept": False, "train_pairs": len(run.train), "iteration_cap": opts.iterations,
            "early_stopping_rounds": opts.early_stopping_rounds}
    if summary is None:
        info.update(seconds=round(time.monotonic() - t0, 2), reason="training failed")
        return info
    info.update(device=summary["device"], training_seconds=summary["seconds"],
                iterations={k: summary[k]["trees"] for k in ("action", "char") if k in summary})
    tm = corrector.load(os.path.dirname(tm_path))
    refs_val = [e.text for e in run.val]
    before = m["val_cer_lm"] if decoder.name == "lm" else m["val_cer"]
    if run.val:
        fixed = [normalize(t, **norm) for t in corrector.apply(tm, out_val)]
        info["val_cer_before"], info["val_cer_after"] = before, scoring.cer(fixed, refs_val)
        m["val_cer_corrected"], m["val_wer_corrected"] = info["val_cer_after"], scoring.wer(fixed, refs_val)
    info["kept"] = not run.val or info["val_cer_after"] < before
    if info["kept"] and run.test:
        fixed = [normalize(t, **norm) for t in corrector.apply(tm, out_test)]
        m.update(_scores("test", fixed, [e.text for e in run.test], "_corrected"))
    if not info["kept"]:
        os.unlink(tm_path)
        info["reason"] = "did not lower validation CER"
        events.warning(f"post-correction left out: validation CER {before:.3f} -> {info['val_cer_after']:.3f}")
    info["seconds"] = round(time.monotonic() - t0, 2)
    events.log(f"post-correction step took {info['seconds']:.1f}s")
    return info
