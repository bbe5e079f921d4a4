"""The README.md model card inside the artifact, so the folder reads like a hub model."""
import os
import re

# licences of the bases people use, for when the base's own card is not at hand
KNOWN_LICENCES = [("facebook/w2v-bert-2.0", "mit"), ("facebook/mms-", "cc-by-nc-4.0"),
                  ("facebook/wav2vec2-xls-r-", "apache-2.0"), ("facebook/wav2vec2-", "apache-2.0")]
LICENCE_NAMES = {"mit": "MIT", "cc-by-nc-4.0": "CC-BY-NC 4.0 (non-commercial)", "apache-2.0": "Apache 2.0"}


def base_licence(base: str) -> str | None:
    """From the base's own README front matter when it is a local folder, else known hub ids."""
    readme = os.path.join(base, "README.md") if os.path.isdir(base) else None
    if readme and os.path.exists(readme):
        with open(readme, encoding="utf-8", errors="replace") as f:
            head = f.read(4000)
        m = re.search(r"^---\s*$(.*?)^---\s*$", head, re.MULTILINE | re.DOTALL)
        if m:
            lic = re.search(r"^licen[cs]e:\s*(\S+)", m.group(1), re.MULTILINE)
            if lic:
                return lic.group(1).strip("'\"")
    for prefix, licence in KNOWN_LICENCES:
        if base.startswith(prefix):
            return licence
    return None


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def render(info: dict) -> str:
    """info: title, engine, base_model, licence, language, created, train_items, train_hours,
    val_items, test_items, metrics{...}, hyperparameters{...}, lm{...}|None,
    transmorgrifier{...}|None, usage (markdown), notes (list of str)."""
    m = info["metrics"]
    licence = info.get("licence")
    front = ["---", "library_name: transformers", "pipeline_tag: automatic-speech-recognition",
             f"license: {licence or 'other'}", f"base_model: {info['base_model']}"]
    if info.get("language"):
        front.append(f"language: {info['language']}")
    front += ["tags:", "- ctc", f"- {info['engine']}", "metrics:", "- cer", "- wer", "---", ""]
    rows = [("validation (model selection)", info["val_items"], m.get("val_cer"), m.get("val_wer")),
            ("test, greedy decoding", info["test_items"], m.get("test_cer"), m.get("test_wer"))]
    if m.get("test_cer_lm") is not None:
        rows.append(("test, with the language model", info["test_items"], m["test_cer_lm"], m.get("test_wer_lm")))
    if m.get("test_cer_corrected") is not None:
        rows.append(("test, after post-correction", info["test_items"], m["test_cer_corrected"],
                     m.get("test_wer_corrected")))
    body = [f"# {info['title']}", "",
            f"CTC speech recognition fine-tuned from `{info['base_model']}` on {info['train_items']} verses "
            f"({_duration(info['train_hours'])} of speech) on {info['created'][:10]}"
            + (f", language `{info['language']}`." if info.get("language") else "."), "",
            "## Results", "", "Character and word error rates on normalised text; the test verses were "
            "never used for training or for choosing the model.", "",
            "| split | verses | CER | WER |", "| --- | --- | --- | --- |"]
    body += [f"| {name} | {n} | {_pct(c)} | {_pct(w)} |" for name, n, c, w in rows]
    body += ["", "## Use", "", info["usage"].strip(), ""]
    lm = info.get("lm")
    if lm and lm.get("kept"):
        body += ["## Language model", "",
                 f"A {lm['order']}-gram word model (interpolated modified Kneser-Ney) of the project's own "
                 f"verse text ({lm['sentences']} verses, {lm['words']} words; held-out verses left out), "
                 f"in `language_model/` with `alphabet.json`: loads with "
                 "`pyctcdecode.BeamSearchDecoderCTC.load_from_dir(folder)` or transformers' "
                 f"`Wav2Vec2ProcessorWithLM.from_pretrained(folder)`. alpha {lm['alpha']}, beta {lm['beta']}.", ""]
    tm = info.get("transmorgrifier")
    if tm and tm.get("kept"):
        body += ["## Post-correction", "", "`transmorgrifier.tm` is a SentenceTransmorgrifier model trained on "
                 "(recognised text → written text) pairs; it restores spelling, capitals and punctuation: "
                 "`Transmorgrifier().load('transmorgrifier.tm').execute(texts)`. The file is a zip of "
                 "`params.json` and catboost models in catboost's binary format (`action.cb`, `char.cb`).", ""]
    body += ["## Files", "", "Every file here is data, none is a pickle: weights in safetensors, configurations, "
             "vocabulary and this card's figures (`card.json`) in JSON, the language model as ARPA text. "
             "Nothing needs `trust_remote_code`.", ""]
    hp = info["hyperparameters"]
    body += ["## Training", "", "| hyper-parameter | value |", "| --- | --- |"]
    body += [f"| {k} | {v} |" for k, v in hp.items()]
    body += ["", "## Licence", ""]
    if licence:
        body.append(f"The base model is licensed {LICENCE_NAMES.get(licence, licence)}; this fine-tuned model "
                    "is a derivative and carries the same terms.")
    else:
        body.append("The base model's licence is not known here: see the base model's own card.")
    body += [""] + [n for n in info.get("notes", [])]
    return "\n".join(front + body).rstrip() + "\n"
