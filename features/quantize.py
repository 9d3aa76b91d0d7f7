"""int8 features: a backbone's OpenVINO IR quantized by NNCF's post-training quantization, calibrated on training
images only.

NNCF sets each activation's int8 range from the images it is shown, so those images are part of what the features
are: ``calibration_set`` draws them, seeded, from the run's train split (never validation or test, whose numbers
would otherwise have shaped the features they are judged on), ``Calibration.identity`` names them in the int8
model's and the features' cache keys, and the external test set's extraction reuses the same sample (it has no
training split of its own). The quantized IR is kept beside the float one, sealed by its manifest like it, and
checked before every compile. Only this module imports ``nncf``, and only when int8 is asked for (``pip install
'cxr-bench[int8]'``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from backbones import BackboneSpec
from common.console import stdout_to_library_log
from features.cache import cache_key, content_fingerprint, file_list_fingerprint
from features.data.dataset import Dataset
from features.data.images import load_image
from features.runtime import kept_ir, nncf_version, openvino_module, write_ir
from features.settings import Calibration, DicomSettings

# NNCF's own default subset size: more images move the ranges little (bench_int8), fewer leave rare activations out.
CALIBRATION_IMAGES = 300
# The backbones whose int8 fidelity was measured on real ImageNet weights over the whole Kermany set
# (docs/performance.md): every selected head's AUC inside float32's interval, some threshold numbers outside.
FIDELITY_MEASURED = ("MobileNetV2", "MobileNetV2-0.35")


def unmeasured_fidelity(backbones) -> str | None:
    """A note naming the int8 ``backbones`` whose fidelity was never measured on real weights, or None."""
    others = [name for name in dict.fromkeys(backbones) if name not in FIDELITY_MEASURED]
    if not others:
        return None
    return (f"note: int8's fidelity on real weights was measured for {' and '.join(FIDELITY_MEASURED)} only, not "
            f"for {', '.join(others)}: compare with a float32 run (python -m benchmark.speed.compare_precision)")


def calibration_set(dataset: Dataset, images: int = CALIBRATION_IMAGES, seed: int = 0) -> Calibration:
    """A seeded sample of at most ``images`` of ``dataset``'s train split, named by their files and contents.

    Raises ``ValueError`` where the train split is empty (nothing to calibrate on).
    """
    train = sorted(record.path for record in dataset.records if record.split == "train")
    if not train:
        raise ValueError("--precision int8 calibrates on the train split, which is empty here")
    chosen = np.random.default_rng(seed).choice(len(train), size=min(images, len(train)), replace=False)
    paths = tuple(train[i] for i in sorted(chosen))
    parts = {"split": "train", "seed": seed, "files": file_list_fingerprint(Path(dataset.root), paths)}
    if dataset.digests and all(path in dataset.digests for path in paths):
        parts["contents"] = content_fingerprint(paths, dataset.digests)
    return Calibration(str(Path(dataset.root).resolve()), paths, cache_key(parts), seed)


def int8_key_parts(calibration: Calibration) -> dict:
    """What the int8 features' cache key adds: the calibration images and the quantizer's version."""
    return {"calibration": calibration.identity, "nncf": nncf_version()}


def int8_ir_file(float_ir: Path, calibration: Calibration, dicom: DicomSettings) -> Path:
    """Where the int8 IR quantized from ``float_ir`` on ``calibration`` is kept: a sibling of its folder."""
    key = cache_key({"float": float_ir.parent.name, **int8_key_parts(calibration), "dicom": dicom.identity()})
    return float_ir.parent.with_name(f"{float_ir.parent.name}-int8-{key[:16]}") / float_ir.name


def int8_ir(float_ir: Path, spec: BackboneSpec, image_size: int, calibration: Calibration,
            dicom: DicomSettings) -> Path:  # fmt: skip
    """The int8 IR of ``float_ir``: kept and checked against its manifest, or quantized now on the calibration
    images (decoded at ``image_size`` and preprocessed as extraction does)."""
    target = int8_ir_file(float_ir, calibration, dicom)

    def make() -> Path:
        return write_ir(target, lambda path: _quantize(float_ir, path, spec, image_size, calibration, dicom),
                        kind="openvino-ir-int8")  # fmt: skip

    return kept_ir(target, make, "quantized")


def _quantize(float_ir: Path, out: Path, spec: BackboneSpec, image_size: int, calibration: Calibration,
              dicom: DicomSettings) -> None:  # fmt: skip
    """NNCF's post-training quantization of ``float_ir``, saved at ``out``: one image per calibration item."""
    nncf_version()
    import nncf

    nncf.set_log_level(logging.ERROR)  # its INFO lines go to the log file, not between the run's own lines
    ov = openvino_module()
    network = ov.Core().read_model(str(float_ir))
    network.reshape([1, image_size, image_size, 3])
    root = Path(calibration.root)
    missing = [path for path in calibration.paths if not (root / path).is_file()]
    if missing:
        raise FileNotFoundError(f"int8 calibration image {root / missing[0]} is not there "
                                f"({len(missing)} of {len(calibration.paths)} missing)")  # fmt: skip
    print(f"{spec.name} {image_size}px: int8 calibration on {len(calibration.paths)} training images", flush=True)

    def item(path: str) -> np.ndarray:
        return spec.preprocess(load_image(root / path, image_size, dicom)[None].astype(np.float32))

    images = nncf.Dataset(calibration.paths, item)
    with stdout_to_library_log():
        quantized = nncf.quantize(network, images, subset_size=len(calibration.paths))
    ov.save_model(quantized, str(out))
