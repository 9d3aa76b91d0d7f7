"""The model card's prose, as the report's sections (``benchmark.reporting.document``), from the card's metadata
(``benchmark.reporting.model_card.card_metadata``): plain words first for a clinician in training, then the exact
numbers and settings for an engineer."""

from __future__ import annotations

from benchmark.reporting.document import Section, bullets, fmt, paragraph, table

NOT_A_MEDICAL_DEVICE = ("**Not a medical device.** This model is for research and education only. It has not been "
                        "cleared or approved by any regulator and must not be used to diagnose, triage or treat "
                        "anyone, nor to inform any clinical decision.")  # fmt: skip
METRIC_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity (recall)", "specificity": "specificity",
                "precision": "precision (PPV)", "f1": "F1", "auc": "ROC AUC"}  # fmt: skip
# How each format is loaded and run: the input is a uint8 RGB batch (n, size, size, 3).
USAGE = {
    "keras": "import keras\nmodel = keras.saving.load_model({path!r})\nprobabilities = model.predict(batch)",
    "onnx": ("import onnxruntime\nsession = onnxruntime.InferenceSession({path!r})\n"
             "probabilities = session.run(None, {{session.get_inputs()[0].name: batch}})[0]"),
    "openvino": ("import openvino as ov\nmodel = ov.Core().compile_model({path!r}, \"CPU\")\n"
                 "probabilities = model(batch)[model.output(0)]"),
    "litert": ("from ai_edge_litert.interpreter import Interpreter\ninterpreter = Interpreter(model_path={path!r})\n"
               "runner = interpreter.get_signature_runner()\n"
               "probabilities = next(iter(runner(**{{runner.get_input_details().popitem()[0]: batch}}).values()))"),
    "saved_model": ("import tensorflow as tf\nmodel = tf.saved_model.load({path!r})\n"
                    "probabilities = model.serve(tf.constant(batch))"),
}  # fmt: skip


def _positive(text: str, joint: str = " + ") -> str:
    return str(text).replace("+", joint)


def _per_100(value) -> str:
    return "n/a" if value is None else f"{round(100 * value)}"


def _missed(value) -> str:
    """The cases per 100 a rate of ``value`` leaves out (missed for a sensitivity, false alarms for a specificity)."""
    return _per_100(None if value is None else 1 - value)


def purpose(meta: dict) -> list[Section]:
    """What the model is, what it is for, and what it is not."""
    classes = ", ".join(meta["classes"])
    kind = ("one probability per finding (several may be present at once)" if meta["multi_label"]
            else "one probability per class, summing to 1")  # fmt: skip
    model = f"here {meta['model']['backbone']}"
    if meta["model"].get("kind") == "ensemble":
        model = "here the average of " + " and ".join(meta["weights"])
    elif meta["model"].get("kind") == "logreg":
        model = f"here {meta['model']['backbone'].removesuffix('-logreg')}, its classifier a logistic regression"
    text = (f"This model reads one chest X-ray and gives {kind}: {classes}. It was made by cxr-bench, a benchmark "
            f"that compares ImageNet-pretrained networks ({model}) with a small classifier "
            "on top, to find out which works best on these images. It is a research artefact: a way to study and "
            "teach how such models behave, not a tool for patients.")  # fmt: skip
    blocks = [paragraph(text)]
    if meta["not_medical_run"]:
        blocks.append(paragraph("**These numbers are not medical.** The run used random weights or synthetic "
                                "phantom images: they measure the pipeline only."))  # fmt: skip
    return [Section("What this model is for", blocks, key="purpose")]


def _plain_task(task: str, row: dict, multi_label: bool) -> list[str]:
    """One task's sensitivity, specificity and AUC in cases per 100 images."""
    sick, lo, hi = row.get("sensitivity"), row.get("sensitivity_ci_low"), row.get("sensitivity_ci_high")
    well = row.get("specificity")
    sign = _positive(row["positive"], " or ")
    against = "present or not" if multi_label else "against the rest"
    out = [f"**{task}** ({_positive(row['positive'])} {against}, {row.get('n_test')} test images): of every "
           f"100 X-rays showing {sign}, it missed about {_missed(sick)} "
           f"(95% interval {_missed(hi)} to {_missed(lo)}); "
           f"of every 100 without, it wrongly flagged about {_missed(well)}. "
           f"ROC AUC {fmt(row.get('auc'), 2)}: shown one X-ray with {sign} and one without, it gives the first the "
           f"higher score about {_per_100(row.get('auc'))} times in 100 (50 is a coin toss)."]  # fmt: skip
    if row.get("op_threshold") is not None:
        out.append(f" At the threshold chosen on validation for sensitivity {fmt(row['op_target_sensitivity'], 2)} "
                   f"(probability ≥ {fmt(row['op_threshold'])}), on test it missed about "
                   f"{_missed(row['op_test_sensitivity'])} in 100 and wrongly flagged about "
                   f"{_missed(row['op_test_specificity'])} in 100.")  # fmt: skip
    return out


def plain_words(meta: dict) -> list[Section]:
    """The test results in cases per 100, and the caveats that bound them."""
    items = ["".join(_plain_task(task, row, meta["multi_label"])) for task, row in meta["tasks"].items()]
    kermany = any("kermany layout" in note for note in meta["data"]["notes"])
    population = " (Kermany's set: children aged 1 to 5, one centre in Guangzhou)" if kermany else ""
    caveats = ["The test images come from the same source as the training images: the same hospital or dataset, "
               f"the same population{population}. On another hospital's X-rays, other machines, other ages or "
               "other views, expect it to do worse"
               + (" (see *External test*)." if meta["external"] else "; it was not tested there."),
               "The intervals are wide when the test set is small: the true rates may lie anywhere inside them.",
               "Each number counts X-rays, not patients, and assumes the disease is as common as in the test set; "
               "in practice the share of flagged X-rays that are truly sick (precision) falls when it is rarer.",
               "Labels are those the dataset gives; their own errors are in these numbers."]  # fmt: skip
    return [Section("How well it did, in plain words", [bullets(items), paragraph("Caveats:"), bullets(caveats)],
                    key="plain")]  # fmt: skip


def data_section(meta: dict) -> list[Section]:
    """Where the images came from, how they were split, and what leaked between splits."""
    counts = meta["data"]["counts"]
    headers = ["split", *next(iter(counts.values()), {})] if counts else ["split"]
    rows = [[split, *values.values()] for split, values in counts.items()]
    leak = meta["data"]["leakage"]
    leak_text = (f"Leakage (`leakage.csv`): {leak['images']} image(s) found with the same bytes in two splits or "
                 f"under two labels ({leak['copies']} copies listed, {leak['dropped']} dropped)"
                 + (": " + ", ".join(f"{n} {problem}" for problem, n in leak["problems"].items()) if leak["problems"]
                    else "") + ".")  # fmt: skip
    # leakage.csv's own counts replace the report's leakage line.
    notes = [note for note in meta["data"]["notes"] if not note.startswith("Leakage")]
    return [Section("Data", [bullets([*notes, leak_text]), table(headers, rows)], key="data")]


def selection(meta: dict) -> list[Section]:
    """The selection rule: validation only."""
    rule = "lowest validation loss" if meta["select_by"] == "val_loss" else f"highest validation {meta['select_by']}"
    text = (f"Every candidate (learning rate, dropout, L2 penalty, the probe's penalty) was trained on the train "
            f"split and scored on the **validation** split only; this model is the one with the **{rule}** "
            f"(`select_by: {meta['select_by']}`). Early stopping and the thresholds also used validation. The test "
            "split was never used to choose anything: it was predicted once, for the numbers below.")  # fmt: skip
    return [Section("How this model was chosen", [paragraph(text)], key="selection")]


def _interval(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    return "n/a" if low is None or high is None else f"{fmt(low)} to {fmt(high)}"


def results(meta: dict) -> list[Section]:
    """Per task: each test metric with its 95% bootstrap interval, the validation value beside it, and the counts."""
    out = [Section("Test results, validation beside them", [paragraph(
        "Decision: " + ("each finding's probability ≥ 0.5." if meta["multi_label"] else
                        "the most probable class, mapped onto the task.")
        + " Intervals: 95% bootstrap over the test images. Validation is where the model was chosen, so a test "
        "value well below it means the choice flattered the model.")], key="results")]  # fmt: skip
    for task, row in meta["tasks"].items():
        body = [[METRIC_NAMES[m], fmt(row.get(m)), _interval(row, m), fmt(row.get(f"val_{m}"))]
                for m in METRIC_NAMES if m in row]  # fmt: skip
        counts = f"TP {row.get('tp')}, FN {row.get('fn')}, FP {row.get('fp')}, TN {row.get('tn')}"
        out.append(Section(f"{task} (positive: {_positive(row['positive'])})",
                           [table(["metric", "test", "95% interval", "validation"], body),
                            paragraph(f"Test counts: {counts} of {row.get('n_test')} images.")], 3,
                           f"results/{task}"))  # fmt: skip
    return out


def operating_point(meta: dict) -> list[Section]:
    """The threshold chosen on validation for the target sensitivity, and what it gave on test."""
    rows = [[task, fmt(r["op_target_sensitivity"], 2), fmt(r["op_threshold"]), fmt(r["op_val_sensitivity"]),
             fmt(r["op_val_specificity"]), fmt(r["op_test_sensitivity"]), fmt(r["op_test_specificity"]),
             fmt(r["op_test_precision"])] for task, r in meta["tasks"].items() if r.get("op_threshold") is not None]
    if not rows:
        return []
    text = ("The threshold on the positive probability that reached the target sensitivity on **validation**; "
            "applied unchanged to test. Use it, not 0.5, where missing a case costs more than a false alarm.")
    headers = ["task", "target", "threshold", "val sens", "val spec", "test sens", "test spec", "test precision"]
    return [Section("Operating point chosen on validation", [paragraph(text), table(headers, rows)], key="operating")]


def calibration(meta: dict) -> list[Section]:
    """Expected calibration error per task."""
    rows = [[task, fmt(r.get("ece"))] for task, r in meta["tasks"].items()]
    text = ("Expected calibration error on test (10 bins): how far, on average, a stated probability is from the "
            "share of X-rays that truly had the finding. 0.05 means a stated 80% is right about 75 to 85 times in "
            "100; larger values mean the probabilities should not be read as chances.")  # fmt: skip
    return [Section("Calibration", [paragraph(text), table(["task", "ECE"], rows)], key="calibration")]


def verdict(meta: dict) -> list[Section]:
    """Whether the test images tell this model apart from the run's best (report.json's verdict)."""
    if not meta["verdict"]:
        return []
    items = [f"**{task}**: {v['status']} ({v['best']} has the highest test AUC). {v['sentence']}"
             for task, v in meta["verdict"].items()]  # fmt: skip
    text = ("A higher number is only better where the test images can tell the models apart (DeLong's test on "
            "AUC, Holm-corrected). **Tied with the best** means they cannot.")
    return [Section("Tied with the best?", [paragraph(text), bullets(items)], key="verdict")]


def subgroups(meta: dict) -> list[Section]:
    """The head's metrics per subgroup (``--subgroups``)."""
    if not meta["subgroups"]:
        return []
    rows = [[r["task"], r["attribute"], r["subgroup"], r.get("n"), fmt(r.get("auc")), _interval(r, "auc"),
             fmt(r.get("sensitivity")), fmt(r.get("specificity"))] for r in meta["subgroups"]]  # fmt: skip
    text = ("The same model on each subgroup of the test images (sensitivity and specificity at the validation "
            "threshold); n/a where a subgroup has too few cases. A gap between subgroups is a warning that it "
            "serves some patients worse.")  # fmt: skip
    headers = ["task", "attribute", "subgroup", "n", "AUC", "95% interval", "sens", "spec"]
    return [Section("Subgroups", [paragraph(text), table(headers, rows)], key="subgroups")]


def external(meta: dict) -> list[Section]:
    """The model, unchanged, on a second dataset."""
    if not meta["external"]:
        return []
    rows = [[task, *(f"{fmt(meta['tasks'].get(task, {}).get(m))} → {fmt(r.get(m))}" for m in METRIC_NAMES)]
            for task, r in meta["external"].items()]  # fmt: skip
    text = ("The model, unchanged (threshold included), scored on another dataset's test images: internal → "
            "external. This is the better guide to how it would do elsewhere.")
    return [Section("External test", [paragraph(text), table(["task", *METRIC_NAMES.values()], rows)],
                    key="external")]  # fmt: skip


def weights(meta: dict) -> list[Section]:
    """The backbone's weights: source, SHA-256, origin and licence as far as known."""
    rows = [[model, f"`{w['source']}`", f"`{w['sha256']}`" if w["sha256"] else "not recorded", w["origin"],
             w["licence"], w["note"]] for model, w in meta["weights"].items()]  # fmt: skip
    text = ("The pretrained network under the classifier, and the terms its weights came with. The classifier on "
            "top was trained by this run. `imagenet:FILE` is Keras' download (its SHA-256 is that of this machine's "
            "Keras cache where it holds the file); `file:SHA256` a weights file the run was given; "
            "`random-init:seed=N` no pretrained weights.")  # fmt: skip
    headers = ["model", "source", "SHA-256", "origin", "licence", "note"]
    return [Section("Backbone weights", [paragraph(text), table(headers, rows)], key="weights")]


def _usage(record: dict) -> str:
    """A format's snippet, as a fenced code block under the packages it needs."""
    code = USAGE.get(record["format"], "# no snippet for this format").format(path=record["path"])
    needs = ", ".join(record["requires"]) or "nothing beyond cxr-bench"
    return f"`{record['format']}` (needs {needs}):\n\n```python\n{code}\n```"


def exports(meta: dict) -> list[Section]:
    """One row per exported file with its parity check against the run, and how to run each."""
    if not meta["exports"]:
        return [Section("The exported files", [paragraph("No exported file was recorded with this card.")],
                        key="exports")]  # fmt: skip
    rows = [[r["format"], f"`{r['path']}`", f"`{r['sha256']}`", r["bytes"], r["parity"]["runtime"],
             r["parity"]["n_images"], f"{r['parity']['max_abs_diff']:.2e}", fmt(r["parity"]["decision_agreement"]),
             f"{r['parity']['tolerance']:.0e}", "passed" if r["parity"]["passed"] else "**failed**"]
            for r in meta["exports"]]  # fmt: skip
    headers = ["format", "file", "SHA-256", "bytes", "checked with", "images", "max abs diff", "decisions agree",
               "tolerance", "parity"]  # fmt: skip
    size, classes = meta["network_data_format"]["inputs"]["image"]["shape"][1], ", ".join(meta["classes"])
    output = ("one sigmoid probability per finding, in the order" if meta["multi_label"]
              else "the class probabilities (softmax), in the order")  # fmt: skip
    text = (f"Each file was loaded by its own runtime and run on the run's test images; its probabilities were "
            f"compared with the run's `predictions.csv`. Input: a uint8 RGB batch of shape (n, {size}, {size}, 3), "
            f"each image resized to {size}×{size} (the model scales the pixels itself). Output: {output} "
            f"{classes}. `batch` below is such a NumPy array.")  # fmt: skip
    usage = [paragraph(_usage(record)) for record in meta["exports"]]
    return [Section("The exported files", [table(headers, rows), paragraph(text), *usage], key="exports")]


def reproduce(meta: dict) -> list[Section]:
    """The head's settings, versions, git revision and command: what an engineer needs to make it again."""
    settings = [[name, f"{value:g}" if isinstance(value, float) else value] for name, value in meta["model"].items()]
    versions = [[name, value] for name, value in meta["versions"].items()]
    items = [f"git revision: `{meta['git']}`", f"made: {meta['timestamp']}",
             f"command: `{meta['command'] or 'not recorded'}`"]  # fmt: skip
    text = ("`metadata.json` holds every value of this card under the run's own column names, and the front matter "
            "of `MODEL_CARD.md` a summary of them; `cxr-bench verify RESULTS_DIR --model-card PATH` checks every "
            "one against the run.")
    return [Section("Reproducing it", [bullets(items), table(["setting", "value"], settings),
                                       table(["package", "version"], versions), paragraph(text)], key="reproduce")]


def card_sections(meta: dict) -> list[Section]:
    """The card's sections, in reading order: plain words first, exact settings last."""
    makers = (purpose, plain_words, data_section, selection, results, operating_point, calibration, verdict,
              subgroups, external, weights, exports, reproduce)  # fmt: skip
    return [section for make in makers for section in make(meta)]
