"""The page's predictions: the same calls as ``benchmark.predict``, one at a time, writing only to a temporary folder.

``PredictionService.predict`` saves each upload under the server's temporary
folder, runs ``benchmark.predict.predict_image`` on it with the run's own
image check, operating threshold and model (``load_predictor``: each head
built once and kept, shared by the ensemble), deletes the upload, and keeps
the heatmap PNG for the page to show. A second request while one is running
is refused (``Busy``) rather than queued: a page that hangs for minutes behind someone else's
occlusion maps is worse than one that says "try again".
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from werkzeug.utils import secure_filename

from backbones.weights import WeightsUnavailableError
from benchmark import predict
from benchmark.evaluation.verdict import ENSEMBLE
from benchmark.serve.results import RunView

MAX_FILES = 16
# The answer to a request the run's files here cannot answer (other weights, a damaged checkpoint): the request is
# fine and the server is up, but the model's files conflict with the run; the message says which and what to do.
RUN_FILES_STATUS = 409
# Heatmaps kept for the page (a PNG of about 50 KB each); older ones are deleted.
KEEP_HEATMAPS = 200


class Busy(RuntimeError):
    """Another prediction is running."""


class PredictionError(ValueError):
    """A request the service cannot answer; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class PredictionService:
    """One predictor per head, built on first use; one prediction at a time; files only under ``temp``."""

    def __init__(self, view: RunView, temp: Path, weights: str | None = None):
        """Raises ``predict.RunFilesError`` (one line) where a model's weights are not the run's or a checkpoint
        is damaged: the server refuses to start rather than answer with other weights."""
        self.view = view
        self.temp = temp
        self.weights = weights
        self.check_models()
        self.lock = threading.Lock()
        self.min_side = view.config.min_side()
        # The model predict uses without --backbone: the run's ensemble, or the best validation selection score.
        self.default_backbone = str(predict.choose_head(view.results_dir)["backbone"])
        self._heads: dict[str, predict.Predictor] = {}  # by head id: the ensemble shares its members' heads
        self._heatmaps: OrderedDict[str, Path] = OrderedDict()

    def check_models(self) -> None:
        """Every model the page offers: its weights are the run's, its checkpoints whole (``check_model_files``:
        hashes, no model built). The ensemble's members are models of the board too."""
        models = self.view.board[self.view.board["backbone"] != ENSEMBLE].drop_duplicates("head_id")
        for _, row in models.iterrows():
            predict.check_model_files(self.view.results_dir, self.view.run, row, self.weights)

    def heatmap(self, token: str) -> Path | None:
        """The heatmap PNG this server made under ``token``, or None: no other file is served from ``temp``."""
        return self._heatmaps.get(token)

    def predictor(self, backbone: str) -> predict.AnyPredictor:
        """``load_predictor`` for ``backbone`` (or the ensemble); each head built once (it builds a whole backbone:
        seconds) and kept."""
        try:
            return predict.load_predictor(self.view.results_dir, backbone, self.weights, cache=self._heads)
        except (predict.RunFilesError, WeightsUnavailableError) as error:
            raise PredictionError(f"cannot load the model {backbone}: {error}", RUN_FILES_STATUS) from error
        except (ValueError, OSError, KeyError) as error:
            raise PredictionError(
                f"cannot load the model {backbone}: {error} (if the run's weights folder has moved, start the "
                "server with --weights DIR)",
                500,
            ) from error

    def predict(self, backbone: str | None, method: str, uploads: list[tuple[str, BinaryIO]]) -> dict:
        """Each upload's answer (or why it cannot be read) with ``backbone`` (default: the selected head).

        ``uploads`` are ``(file name as sent, readable file)``. Raises ``Busy`` while another prediction
        runs and ``PredictionError`` for a request that is wrong as a whole."""
        backbone = backbone or self.default_backbone
        self._check_request(backbone, method, uploads)
        if not self.lock.acquire(blocking=False):
            raise Busy("busy: another prediction is running on this server; try again in a moment")
        try:
            predictor = self.predictor(backbone)
            operating = predict.operating_threshold(self.view.results_dir, predictor.head_id)
            method = predictor.heatmap_method(method)
            images = [self._one(predictor, operating, method, name, fh) for name, fh in uploads]
        finally:
            self.lock.release()
        return {"model": self._model(backbone, predictor, operating, method), "images": images}

    def _check_request(self, backbone: str, method: str, uploads: list) -> None:
        if backbone not in self.view.backbones:
            raise PredictionError(f"unknown model {backbone!r}; this run has {', '.join(self.view.backbones)}")
        if method not in predict.METHODS:
            raise PredictionError(f"unknown heatmap method {method!r}; choose one of {', '.join(predict.METHODS)}")
        if not uploads:
            raise PredictionError("no image in the request: choose or drop at least one image")
        if len(uploads) > MAX_FILES:
            raise PredictionError(f"{len(uploads)} images in one request; the limit is {MAX_FILES}")

    def _one(self, predictor: predict.AnyPredictor, operating, method: str, name: str, fh: BinaryIO) -> dict:
        """One upload through ``predict_image``: saved under ``temp``, predicted, deleted; the heatmap kept."""
        token = uuid.uuid4().hex
        folder = self.temp / "uploads" / token
        folder.mkdir(parents=True)
        # The name as sent can hold anything ("../../x"): only a sanitised last part names the temporary file.
        path = folder / (secure_filename(name) or "upload")
        try:
            with path.open("wb") as out:
                shutil.copyfileobj(fh, out)
            row = predict.predict_image(predictor, path, self.min_side, operating, method,
                                        self.temp / "heatmaps" / token, log=_quiet)  # fmt: skip
        except Exception as error:  # one bad image must fail neither the others nor the server
            return {"name": name, "ok": False, "error": f"cannot be read: {error}"}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(row, predict.SkippedImage):  # its reason only: the temporary path means nothing to the user
            return {"name": name, "ok": False, "error": row.reason}
        self._keep(token, Path(row["heatmap"]))
        return {"name": name, "ok": True, "predicted": row["predicted"],
                "probabilities": {label: row[f"p_{label}"] for label in predictor.classes},
                "decision": _decision(row, operating), "heatmap": f"heatmaps/{token}.png"}  # fmt: skip

    def _keep(self, token: str, path: Path) -> None:
        """Remember a heatmap for the page; forget (and delete) the oldest beyond ``KEEP_HEATMAPS``."""
        self._heatmaps[token] = path
        while len(self._heatmaps) > KEEP_HEATMAPS:
            _, old = self._heatmaps.popitem(last=False)
            shutil.rmtree(old.parent, ignore_errors=True)

    def _model(self, backbone: str, predictor: predict.AnyPredictor, operating, method: str) -> dict:
        """What the page says about the model: which head, which heatmap, which threshold."""
        height, width = predictor.feature_map_size()
        return {
            "backbone": backbone,
            "description": predictor.description,
            "head_id": predictor.head_id,
            "image_size": predictor.image_size,
            "classes": list(predictor.classes),
            "method": method,
            "feature_map": f"{height}x{width}",
            "operating": None
            if operating is None
            else dict(zip(("task", "positive", "threshold"), operating, strict=True)),
            "not_medical": self.view.run.not_medical,
        }


def _quiet(line: str) -> None:
    """The log of ``predict_image`` on the page: the answer goes to the page, not to the server's console."""


def _decision(row: dict, operating) -> dict | None:
    """The operating threshold's decision on the first task, as ``predict_image`` made it."""
    if operating is None:
        return None
    return {"task": row["task"], "positive": operating[1], "score": row["score"], "threshold": row["threshold"],
            "flagged": bool(row["flagged"])}  # fmt: skip


def uploads_of(files: Iterable) -> list[tuple[str, BinaryIO]]:
    """``(name as sent, stream)`` of werkzeug ``FileStorage`` objects, leaving out empty file fields."""
    return [(storage.filename or "upload", storage.stream) for storage in files if storage.filename]
