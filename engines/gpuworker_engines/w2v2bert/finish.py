"""After fine-tuning: validation metrics of the best model, post-correction, the packed artifact."""
import os
import time

from .. import events
from ..events import EngineError
from . import SAMPLE_RATE, artifact, scoring, transmorgrifier
from .model import load_audio, load_trained
from .transcribe import greedy
from .vocab import normalize

CHUNK = 256  # items per transcription chunk: bounds memory on large datasets


def transcribe_examples(model, fe, tok, arch, examples, batch_size, device) -> list[str]:
    texts = []
    for s in range(0, len(examples), CHUNK):
        waves = [load_audio(e.audio) for e in examples[s:s + CHUNK]]
        texts += greedy(model, fe, tok, arch, waves, batch_size, str(device))
    return texts


def finish(cfg, best_dir, best, train_ex, val_ex, arch, device, stop, skipped) -> dict:
    if not os.path.isdir(best_dir):
        raise EngineError(f"best model folder missing: {best_dir} (was output_dir changed on resume?)")
    model, fe, tok, arch = load_trained(best_dir, str(device))
    norm = cfg.text_normalization
    raw_val = transcribe_examples(model, fe, tok, arch, val_ex, cfg.batch_size, device)
    refs_val = [e.text for e in val_ex]
    val_cer = scoring.cer(raw_val, refs_val) if val_ex else None
    val_wer = scoring.wer(raw_val, refs_val) if val_ex else None
    cer_fixed = wer_fixed = None

    tm_path = os.path.join(best_dir, transmorgrifier.FILENAME)
    if os.path.exists(tm_path):
        os.unlink(tm_path)  # from an earlier, interrupted packing
    tm_cfg = cfg.transmorgrifier
    if tm_cfg.get("enabled", True):
        if stop:
            raise events.Interrupted("stopped before post-correction training")
        t0 = time.monotonic()
        raw_train = transcribe_examples(model, fe, tok, arch, train_ex, cfg.batch_size, device)
        events.log(f"training post-correction on {len(train_ex)} sentences "
                   f"({int(tm_cfg.get('iterations', 4000))} iterations)")
        try:
            tm = transmorgrifier.train(raw_train, [e.original for e in train_ex],
                                       iterations=int(tm_cfg.get("iterations", 4000)),
                                       device=str(tm_cfg.get("device", "cpu")),
                                       context=int(tm_cfg.get("context", 7)))
        except Exception as e:  # noqa: BLE001 - catboost refuses degenerate data (e.g. one class)
            events.warning(f"post-correction not trained: {type(e).__name__}: {e}")
            tm = None
        if tm is not None and val_ex:
            fixed = [normalize(t, **norm) for t in transmorgrifier.apply(tm, raw_val)]
            cer_fixed, wer_fixed = scoring.cer(fixed, refs_val), scoring.wer(fixed, refs_val)
            if cer_fixed > val_cer:
                events.warning(f"post-correction left out: it raised validation CER "
                               f"from {val_cer:.3f} to {cer_fixed:.3f}")
                tm = None
        if tm is not None:
            transmorgrifier.save(tm, best_dir)
        events.log(f"post-correction step took {time.monotonic() - t0:.1f}s")

    metrics = {"val_cer": val_cer, "val_wer": val_wer, "val_cer_corrected": cer_fixed,
               "val_wer_corrected": wer_fixed}
    card = {
        "format": 1, "engine": "w2v2bert", "arch": arch, "sample_rate": SAMPLE_RATE,
        "base_model": "tiny (random)" if cfg.size == "tiny" else cfg.base_model,
        "text_normalization": norm, "vocab_size": len(tok),
        "post_correction": os.path.exists(tm_path), "best_epoch": best.get("epoch"),
        "metrics": metrics, "metrics_note": "CER/WER on normalised text, validation split",
        "train_items": len(train_ex), "val_items": len(val_ex), "skipped_items": len(skipped),
        "config": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = artifact.pack(best_dir, os.path.join(os.path.abspath(cfg.output_dir), artifact.NAME), card)
    events.emit("checkpoint", path=path, epoch=cfg.epochs, step=None, kind="final")
    return {"artifact": path, "best_epoch": best.get("epoch"), **metrics,
            "post_corrected": card["post_correction"], "skipped": skipped}
