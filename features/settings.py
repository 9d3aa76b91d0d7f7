"""The settings of the data and feature-extraction stages, as frozen dataclasses; imports only features.options.

``benchmark.config.RunConfig`` derives them (``RunConfig.stages()``); they
live here, below the benchmark package, because the features stages take them.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.options import option


@dataclass(frozen=True)
class DataSettings:
    """How the image check, the splits and the leakage check run.

    ``rehash`` reads every image's bytes again on each run (``features.data.audit.rehash_images``) instead of
    trusting the check remembered for its size and modification time.
    """

    min_side: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    val_source: str = "carve"
    limit_per_class: int | None = None
    leakage: str = "warn"
    seed: int = 0
    cache_dir: str = ".cache/features"
    progress: bool = True
    rehash: bool = False
    views: tuple[str, ...] = ()  # --views: only these views are kept (features.data.views); (): every view


def compute_key(backbone: str, size: int) -> str:
    """``"ResNet50-224px"``: how ``run.json`` names a backbone at an image size in its compute plan."""
    return f"{backbone}-{size}px"


def parse_compute_key(key: str) -> tuple[str, int]:
    """``("MobileNetV2-0.35", 224)`` from ``"MobileNetV2-0.35-224px"`` (``compute_key`` read back)."""
    backbone, _, size = key.rpartition("-")
    return backbone, int(size.removesuffix("px"))


@dataclass(frozen=True)
class Choice:
    """One compute choice: what was asked (``auto`` or a value), what is used, and why."""

    requested: str
    value: str
    reason: str = ""

    def to_json(self, kind: str) -> dict:
        """``{"requested", KIND, "reason"}``: the shape ``run.json`` records (``kind`` is precision or runtime)."""
        return {"requested": self.requested, kind: self.value, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict, kind: str) -> Choice:
        """The choice ``to_json`` wrote."""
        return cls(data.get("requested", data[kind]), data[kind], data.get("reason", ""))


@dataclass(frozen=True)
class BackboneCompute:
    """The runtime and precision one backbone computes in at one image size, each with its reason."""

    backbone: str
    size: int
    runtime: Choice
    precision: Choice

    @property
    def key(self) -> str:
        """The backbone and size as ``run.json`` names them."""
        return compute_key(self.backbone, self.size)


@dataclass(frozen=True)
class Calibration:
    """The training images an int8 backbone is calibrated on (``features.quantize``): a seeded sample of the run's
    train split, never its validation or test images, and the same sample for the external test set's extraction.

    ``identity`` names the images by path, size, modification time and, where the image check read them, contents;
    it is part of the int8 model's and the int8 features' cache keys.
    """

    root: str
    paths: tuple[str, ...]
    identity: str
    seed: int = 0

    def to_json(self) -> dict:
        """What ``run.json`` records: the folder, the images and the identity."""
        return {"split": "train", "root": self.root, "images": len(self.paths), "seed": self.seed,
                "identity": self.identity, "paths": list(self.paths)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        """The calibration ``to_json`` wrote."""
        return cls(data["root"], tuple(data["paths"]), data["identity"], data.get("seed", 0))


@dataclass(frozen=True)
class ComputePlan:
    """Where (runtime) and in which type (precision) the backbones compute: the run's choice and each backbone's.

    Resolved once per run (``benchmark.pipeline.resolve_compute``), never ``auto``: every stage, the cache keys,
    ``run.json`` and ``predict`` read the same values from it.
    """

    runtime: Choice = Choice("keras", "keras")
    precision: Choice = Choice("float32", "float32")
    backbones: tuple[BackboneCompute, ...] = ()
    calibration: Calibration | None = None  # where some backbone computes in int8

    def for_backbone(self, backbone: str, size: int) -> BackboneCompute:
        """``backbone`` at ``size``: its own choices where the plan has them, else the run's."""
        own = next((one for one in self.backbones if (one.backbone, one.size) == (backbone, size)), None)
        return own or BackboneCompute(backbone, size, self.runtime, self.precision)

    def own(self) -> tuple[BackboneCompute, ...]:
        """The backbones whose own check chose otherwise than the run, runtime or precision."""
        run = (self.runtime.value, self.precision.value)
        return tuple(one for one in self.backbones if (one.runtime.value, one.precision.value) != run)

    def to_json(self) -> dict:
        """``{"precision": ..., "runtime": ...}``: each the run's choice with its ``backbones`` by key; the int8
        calibration, where there is one, under ``precision``."""
        plan = {kind: {**getattr(self, kind).to_json(kind),
                       "backbones": {one.key: getattr(one, kind).to_json(kind) for one in self.backbones}}
                for kind in ("precision", "runtime")}  # fmt: skip
        if self.calibration is not None:
            plan["precision"]["calibration"] = self.calibration.to_json()
        return plan

    @classmethod
    def from_json(cls, precision: dict, runtime: dict | str | None) -> ComputePlan:
        """The plan ``to_json`` wrote, and its older shapes: ``runtime`` a plain name (runs before
        ``--runtime auto``) or absent (Keras), either without ``backbones``."""
        if not isinstance(runtime, dict):
            runtime = {"runtime": runtime or "keras"}
        run = cls(Choice.from_json(runtime, "runtime"), Choice.from_json(precision, "precision"))
        own_runtime = runtime.get("backbones", {})
        backbones = tuple(
            BackboneCompute(*parse_compute_key(key),
                            Choice.from_json(own_runtime[key], "runtime") if key in own_runtime else run.runtime,
                            Choice.from_json(mine, "precision"))
            for key, mine in precision.get("backbones", {}).items()
        )  # fmt: skip
        calibration = precision.get("calibration")
        return cls(run.runtime, run.precision, backbones, Calibration.from_json(calibration) if calibration else None)


# How a DICOM file's window is chosen: the one the file states (``file``), or its full used range (``range``).
DICOM_WINDOWS = ("file", "range")


@dataclass(frozen=True)
class DicomSettings:
    """How a DICOM file's stored values become the 8-bit image every backbone reads (``features.data.dicom``).

    ``window`` ``file``: the VOI LUT or window the file states, its ``voi``-th (1: the first; a file stating fewer:
    its last); ``range``: the file's window ignored, the full used range (min..max) mapped onto 8 bits, as a 16-bit
    PNG's. Part of the pixel and feature cache keys (``identity``): another choice decodes, and extracts, anew.
    """

    window: str = "file"
    voi: int = 1

    def identity(self) -> str:
        """The settings in the cache keys: ``file:1`` or ``range``."""
        return f"{self.window}:{self.voi}" if self.window == "file" else self.window


@dataclass(frozen=True)
class ExtractSettings:
    """How features are extracted and cached (everything but the backbone and the image size).

    ``precision`` and ``runtime`` are the configured ones; ``compute`` (where set) is what the run resolved them
    to, never ``auto``: the run resolves ``--precision auto`` and ``--runtime auto`` once, before extraction
    (``benchmark.pipeline``), so every stage sees the same values, for each backbone too. ``dicom`` says how DICOM
    files are windowed onto 8 bits (``--dicom-window``, ``--dicom-voi``).
    """

    weights: str = "none"
    batch_size: int = 32
    shard_size: int = 512
    seed: int = 0
    precision: str = "float32"
    jit_compile: bool = False
    runtime: str = "keras"
    pixel_cache: bool = True
    cache_dir: str = ".cache/features"
    progress: bool = True
    compute: ComputePlan | None = None
    dicom: DicomSettings = DicomSettings()

    def precision_for(self, backbone: str, size: int) -> str:
        """The compute type of ``backbone`` at ``size``: the resolved plan's, else the configured one."""
        return self.precision if self.compute is None else self.compute.for_backbone(backbone, size).precision.value

    @property
    def calibration(self) -> Calibration | None:
        """The training images int8 backbones are calibrated on, where the resolved plan has int8."""
        return None if self.compute is None else self.compute.calibration

    def runtime_for(self, backbone: str, size: int) -> str:
        """The runtime of ``backbone`` at ``size``: the resolved plan's, else the configured one."""
        return self.runtime if self.compute is None else self.compute.for_backbone(backbone, size).runtime.value


# What CheXpert's uncertain (-1) and blank (not mentioned) values may stand for.
UNKNOWN_POLICIES = ("ignore", "zeros", "ones")
LABELS_GROUP = "labels from a CSV (NIH, CheXpert, RSNA, PadChest) instead of class folders"
# The public datasets' label files a labels CSV may be recognised as (features.data.formats holds one spec per
# name); auto recognises one by its header, none reads the CSV with the column options alone.
LABELS_FORMATS = ("auto", "none", "nih", "chexpert", "mimic", "padchest", "rsna", "vindr")
# How several readers' labels of one image (VinDr-CXR) combine into one: a finding any of them, more than half
# of them, or all of them marked.
READER_VOTES = ("any", "majority", "all")


@dataclass(frozen=True)
class LabelSettings:
    """Where a dataset's labels come from: class folders (``labels`` None) or a CSV beside the image folder.

    ``classes`` (optional) is the label set, in label-index order; a CSV label outside it is left out as
    unknown. ``patient_column`` and ``split_column`` are optional: without a patient column the patient is
    read from the file name, as for folders; without a split column test and validation are carved.
    ``split_lists`` pairs a split with a text file naming its images, one a line (a CSV path or its file
    name), the official split lists NIH publishes; it replaces a split column.

    Multi-label (several findings per image) comes in two forms: ``findings_column``, one column of
    findings separated by ``finding_separator`` with ``no_finding`` for an image without one (NIH's
    ``Finding Labels``); or ``finding_columns``, one column per finding holding 1, 0, -1 (uncertain) or
    blank (CheXpert), with ``uncertain`` and ``blank`` saying what -1 and blank stand for: ``ignore``
    (unknown: left out of that finding's loss and metrics), ``zeros`` or ``ones``.

    ``labels_format`` names a public dataset's own label file (``features.data.formats``), or ``auto`` to
    recognise one by its header: its preset fills only the fields still at their default here.
    """

    # Each is also a command-line option of ``run`` and ``audit`` (features.options), declared here only.
    labels: str | None = option(
        None, "the labels CSV, one row per image; its image paths are relative to --data (an image not at its path "
        "is found by its unique file name below --data, as NIH's images_001/ folders need) (default: none; the class "
        "folders are the labels)", group=LABELS_GROUP, metavar="FILE.csv")  # fmt: skip
    path_column: str = option("path", "the labels CSV's column of image paths", group=LABELS_GROUP, metavar="NAME")
    label_column: str = option("label", "one class per image: the labels CSV's column of class names",
                               group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    patient_column: str | None = option(
        None, "the labels CSV's column of patient ids: splits are carved by patient (default: the patient read from "
        "the file name, as for folders)", group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    patient_pattern: str | None = option(
        None, "a regular expression finding the patient id in each image path, where the CSV has no patient column "
        r"(CheXpert: 'patient(\d+)'; its first group, else the whole match)", group=LABELS_GROUP,
        metavar="REGEX")  # fmt: skip
    split_column: str | None = option(
        None, "the labels CSV's column of official splits (train, val, test); without it test and validation are "
        "carved", group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    classes: tuple[str, ...] = option(
        (), "the labels CSV's classes (or --findings-column findings), in this order; rows with another label are "
        "left out as unknown (default: every label found, sorted; Kermany's normal bacterial viral in that order)",
        group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    split_lists: tuple[tuple[str, str], ...] = ()  # (split, file of image names): NIH's train_val_list.txt
    findings_column: str | None = option(
        None, "multi-label, NIH's form: the column of findings separated by --finding-separator, --no-finding for an "
        "image with none (NIH: 'Finding Labels')", group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    finding_separator: str = option("|", "the character between findings in --findings-column", group=LABELS_GROUP,
                                    metavar="C")  # fmt: skip
    no_finding: str = option("No Finding", "the --findings-column value of an image with no finding",
                             group=LABELS_GROUP, metavar="TEXT")  # fmt: skip
    finding_columns: tuple[str, ...] = option(
        (), "multi-label, CheXpert's form: one column per finding holding 1, 0, -1 (uncertain) or blank",
        group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    uncertain: str = option(
        "ignore", "what a -1 (uncertain) in --finding-columns stands for: ignore (left out of that finding's loss and "
        "metrics), zeros or ones (CheXpert's U-Ignore, U-Zeros, U-Ones)", group=LABELS_GROUP,
        choices=UNKNOWN_POLICIES)  # fmt: skip
    blank: str = option("zeros", "what a blank cell in --finding-columns stands for (CheXpert: not mentioned)",
                        group=LABELS_GROUP, choices=UNKNOWN_POLICIES)  # fmt: skip
    sex_column: str | None = option(
        None, "the labels CSV's column of the patient's sex (M/F, Male/Female), for --subgroups sex",
        group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    age_column: str | None = option(
        None, "the labels CSV's column of the patient's age in years (or DICOM's 045Y), for --subgroups age:BINS",
        group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    view_column: str | None = option(
        None, "the labels CSV's column of the view position (PA, AP, LATERAL), for --subgroups view and --views",
        group=LABELS_GROUP, metavar="NAME")  # fmt: skip
    labels_format: str = option(
        "auto", "the public dataset whose own label file --labels is: nih (Data_Entry_2017.csv), chexpert "
        "(train.csv, valid.csv), mimic (mimic-cxr-2.0.0-chexpert.csv), padchest (PADCHEST_..._labels_160K_01.02.19"
        ".csv), rsna (stage_2_train_labels.csv), vindr (image_labels_train.csv, annotations_train.csv); its columns, "
        "label form, splits and attributes are defaults the options above override; auto recognises it by the "
        "header, none reads the CSV with the options alone", group=LABELS_GROUP,
        choices=LABELS_FORMATS)  # fmt: skip
    reader_vote: str = option(
        "majority", "VinDr-CXR's several radiologists per image: a finding is kept where any, a majority (more "
        "than half) or all of the image's readers marked it", group=LABELS_GROUP, choices=READER_VOTES)  # fmt: skip
    # Other CSV columns whose values a run keeps on each record (--subgroups COLUMN); set by the run, not an option.
    attribute_columns: tuple[str, ...] = ()

    @property
    def multi_label(self) -> bool:
        """Whether the CSV gives several findings per image (either form) rather than one class."""
        return self.findings_column is not None or bool(self.finding_columns)

    def attribute_sources(self) -> dict[str, str]:
        """Attribute name -> the CSV column it is read from: sex, age and view where named, and the kept columns."""
        standard = {"sex": self.sex_column, "age": self.age_column, "view": self.view_column}
        return {name: column for name, column in standard.items() if column is not None} | {
            column: column for column in self.attribute_columns if column not in standard}


@dataclass(frozen=True)
class ExternalSettings:
    """A second dataset the selected heads are tested on, unchanged: its folder, its labels and a class mapping.

    ``mapping`` pairs an external class name with the training class it stands for; without a pair a name
    maps onto the training class of the same name, ignoring case.
    """

    root: str
    labels: LabelSettings = LabelSettings()
    mapping: tuple[tuple[str, str], ...] = ()
