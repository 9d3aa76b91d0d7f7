"""What an export wrote and how its parity check went: the types the export command, the model card and the
trackers share. A leaf: imports nothing of ours."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The model card and its machine-readable twin, written beside every export.
MODEL_CARD = "MODEL_CARD.md"
METADATA_JSON = "metadata.json"


@dataclass(frozen=True)
class ParityResult:
    """An exported file, loaded by its own runtime, against the run's ``predictions.csv`` on the same images."""

    runtime: str  # the runtime that loaded and ran the export ("onnxruntime 1.32.0")
    n_images: int  # the run's test images predicted
    max_abs_diff: float  # the largest absolute difference of any class probability
    decision_agreement: float  # the share of images whose decision (argmax, or each finding's p >= 0.5) agrees
    tolerance: float  # the largest max_abs_diff accepted for this precision
    passed: bool
    error: str = ""  # why the file could not be loaded or run, where it could not


    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExportRecord:
    """One exported model file: which model of which run, in which format, and its parity check."""

    format: str  # "keras", "onnx", "openvino", "litert", "saved_model"
    path: str  # the file (or folder, for saved_model and OpenVINO's .xml + .bin) relative to the export folder
    sha256: str  # artifact_sha256: of the file, or for a folder of its files' names and digests
    bytes: int  # the file's size, or the folder's files' sizes added up
    model: str  # the leaderboard's model name ("MobileNetV2-0.35", "MobileNetV2-ft", "MobileNetV2-logreg")
    head_id: str
    image_size: int  # the input is a uint8 batch (n, image_size, image_size, 3), RGB
    classes: tuple[str, ...]  # the output's columns, in order
    multi_label: bool  # one sigmoid per finding (True) or a softmax over the classes (False)
    precision: str  # "float32"
    parity: ParityResult
    requires: tuple[str, ...] = field(default=())  # the packages that load and run it ("onnxruntime>=1.17")

    def to_json(self) -> dict:
        values = asdict(self)
        values["classes"] = list(self.classes)
        values["requires"] = list(self.requires)
        return values

