"""Published results on the Kermany test set, each tagged with its protocol: shown beside a run's rows, never re-run.

A leaf module (it imports nothing of ours). Each row says how the number was
made, because a number chosen on test, or from a network fine-tuned end to
end, is not the same kind of claim as a frozen-feature head selected on
validation. Every PneumoniaMNIST test image is one of Kermany's 624,
downsampled, so those rows are on the same cases, at another resolution.

Bump ``REFERENCES_VERSION`` whenever a row is added or corrected; it is
written into ``report.json`` with the rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REFERENCES_VERSION = "2026-12-03"
# The test split these rows were scored on: a run shows them only when its test set is this one.
KERMANY_TEST_COUNTS = {"normal": 234, "bacterial": 242, "viral": 148}
PROTOCOLS = ("frozen features", "linear probe", "fine-tuned", "trained from scratch")
SELECTIONS = ("test", "validation AUC", "validation loss")


@dataclass(frozen=True)
class PublishedResult:
    """One published number set on ``normal_vs_pneumonia`` of Kermany's 624 test images, with how it was made."""

    source: str
    citation: str
    model: str
    resolution: int
    protocol: str  # one of PROTOCOLS
    pretraining: str
    selection: str  # one of SELECTIONS: what chose the reported checkpoint or settings
    test_set: str
    accuracy: float = math.nan
    sensitivity: float = math.nan
    specificity: float = math.nan
    auc: float = math.nan
    task: str = "normal_vs_pneumonia"

    def to_json(self) -> dict:
        """Plain values (NaN where the paper gives no number)."""
        return asdict(self)


_KERMANY = "Kermany et al. 2018, Cell 172(5):1122-1131"
_MEDMNIST = "Yang et al. 2023, Scientific Data 10:41 (MedMNIST v2)"
_MEDMNIST_PLUS = "Doerrich et al. 2025, Scientific Reports (MedMNIST+; arXiv:2404.15786)"
_PNEUMONIA_MNIST = "PneumoniaMNIST test (Kermany's 624, downsampled)"

REFERENCES: tuple[PublishedResult, ...] = (
    PublishedResult("Kermany 2018", _KERMANY, "InceptionV3", 299, "frozen features", "ImageNet", "test",
                    "Kermany test (624)", accuracy=0.928, sensitivity=0.932, specificity=0.901, auc=0.968),
    PublishedResult("MedMNIST v2", _MEDMNIST, "ResNet-50", 224, "trained from scratch", "none stated",
                    "validation AUC", _PNEUMONIA_MNIST, accuracy=0.884, auc=0.962),
    PublishedResult("MedMNIST v2", _MEDMNIST, "ResNet-18", 28, "trained from scratch", "none stated",
                    "validation AUC", _PNEUMONIA_MNIST, accuracy=0.854, auc=0.944),
    PublishedResult("MedMNIST+", _MEDMNIST_PLUS, "DenseNet-121", 224, "linear probe", "ImageNet",
                    "validation loss", _PNEUMONIA_MNIST, auc=0.973),
    PublishedResult("MedMNIST+", _MEDMNIST_PLUS, "DINO ViT-B/16", 224, "linear probe",
                    "DINO (ImageNet, self-supervised)",
                    "validation loss", _PNEUMONIA_MNIST, auc=0.989),
    PublishedResult("MedMNIST+", _MEDMNIST_PLUS, "VGG16", 224, "fine-tuned", "ImageNet",
                    "validation loss", _PNEUMONIA_MNIST, auc=0.985),
)  # fmt: skip


def references_for(test_counts: dict[str, int]) -> tuple[PublishedResult, ...]:
    """The published rows that apply to a run whose test split has ``test_counts`` images per class.

    Only Kermany's own 624-image test split qualifies: the same images, the same three classes and counts.
    """
    return REFERENCES if dict(test_counts) == KERMANY_TEST_COUNTS else ()
