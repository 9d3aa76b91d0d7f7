"""The timm/PyTorch side of ``bench_extract``: one backbone in its own process, timed on request.

    python benchmark/speed/timm_worker.py --model resnet50 --pixels PIXELS.npy --precision bfloat16

Run by ``bench_extract`` (its ``timm-float32`` and ``timm-bfloat16`` variants), with the interpreter given by
``--timm-python``: PyTorch and timm may live in another environment than TensorFlow. It imports nothing of
this project. What a PyTorch user would pick: ``timm.create_model(name, num_classes=0)`` in eval mode,
channels-last, ``torch.inference_mode()``, on the GPU where PyTorch sees one (else the CPU), and for bfloat16 or
float16 ``torch.autocast`` on that device. The
input is the harness's own decoded uint8 pixels (``--pixels``, N x size x size x 3), so both sides start from
the same decoded images; the timed pass is timm's normalisation, the forward pass and the pooled features back
as float32 NumPy, batch by batch.

Protocol, one JSON object per line: the worker builds, counts FLOPs and warms up (two batches), then writes
``{"ready": ...}``; it answers ``run`` with ``{"seconds": ...}``, ``save PATH`` by writing the last pass's
features to PATH (``.npy``), and exits on ``quit`` or end of input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def build(name: str) -> torch.nn.Module:
    """timm's ``name`` with random weights and no classifier, in eval mode, channels-last, on ``DEVICE``."""
    model = timm.create_model(name, pretrained=False, num_classes=0)
    return model.eval().to(DEVICE, memory_format=torch.channels_last)


def pooled(model, images: torch.Tensor) -> torch.Tensor:
    """The last feature map averaged over space: the harness's GlobalAveragePooling2D features.

    ``forward_features``, not ``model(x)``: timm's VGG16 head adds two 4096-wide convolutions even without
    a classifier, which the Keras backbone does not have.
    """
    return model.forward_features(images).mean(dim=(2, 3))


def normaliser(model: torch.nn.Module):
    """uint8 NHWC batch -> normalised float32 NCHW channels-last tensor, with the model's own mean and std."""
    config = model.pretrained_cfg
    mean = torch.tensor(config["mean"], device=DEVICE).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config["std"], device=DEVICE).view(1, 3, 1, 1) * 255.0

    def normalise(batch: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(batch).to(DEVICE).permute(0, 3, 1, 2).float()
        return ((images - mean) / std).contiguous(memory_format=torch.channels_last)

    return normalise


def features(model, pixels: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
    """Pooled float32 features of every image of ``pixels``, ``batch_size`` at a time."""
    normalise = normaliser(model)
    out = []
    autocast = torch.autocast(DEVICE, dtype=AUTOCAST.get(precision, torch.bfloat16), enabled=precision in AUTOCAST)
    with torch.inference_mode(), autocast:
        for start in range(0, len(pixels), batch_size):
            # .cpu() waits for the device: the features are back on the host, as the harness's are.
            out.append(pooled(model, normalise(pixels[start : start + batch_size])).float().cpu().numpy())
    return np.concatenate(out)


def gflops_per_image(model, size: int) -> float:
    """Forward FLOPs of one image, counted by PyTorch (a multiply-add counts two)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pooled(model, torch.zeros(1, 3, size, size, device=DEVICE).contiguous(memory_format=torch.channels_last))
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> None:
    """Build, warm up, then serve ``run`` / ``save PATH`` / ``quit`` on standard input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a timm model name, e.g. resnet50")
    parser.add_argument("--pixels", required=True, help=".npy of uint8 images, N x size x size x 3")
    parser.add_argument("--precision", choices=("float32", *AUTOCAST), default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pixels = np.load(args.pixels)
    model = build(args.model)
    ready = {"ready": True, "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
             "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
             "gflops": gflops_per_image(model, pixels.shape[1])}  # fmt: skip
    last = features(model, pixels[: 2 * args.batch_size], args.batch_size, args.precision)  # warm-up
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        command, _, operand = line.strip().partition(" ")
        if command == "run":
            started = time.perf_counter()
            last = features(model, pixels, args.batch_size, args.precision)
            print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
        elif command == "save":
            np.save(operand, last)
            print(json.dumps({"saved": operand}), flush=True)
        else:
            break


if __name__ == "__main__":
    main()
