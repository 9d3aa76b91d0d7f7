"""The Flask application: the run page, the one-image page, the run's known files, and the prediction API.

Only three kinds of file are ever sent: the run's top-level reports
(``READ_FILES``), its known plots (``RunView.plots``) and the heatmaps this
server made (by a random token). A name is looked up in those lists, never
joined to a path as given, and a file whose real location (symbolic links
resolved) is outside the results folder is refused too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, abort, jsonify, render_template, request, send_file
from jinja2 import DictLoader
from werkzeug.exceptions import HTTPException
from werkzeug.security import safe_join

from benchmark import run_folder
from benchmark.run_folder import READ_FILES
from benchmark.serve import pages
from benchmark.serve.predictions import KEEP_HEATMAPS, MAX_FILES, Busy, PredictionError, PredictionService, uploads_of
from benchmark.serve.results import RunView, load_run, template_helpers

# Per request. A chest X-ray is a few MB (the Kermany JPEGs are under 3 MB); 16 of them fit.
MAX_UPLOAD_MB = 64
EXTENSION = "cxr_bench"


@dataclass
class ServeState:
    """What one server holds: the run it shows, its predictions, and the temporary folder it alone writes to."""

    view: RunView
    service: PredictionService
    temp: tempfile.TemporaryDirectory

    def close(self) -> None:
        """Delete the temporary folder (uploads and heatmaps)."""
        self.temp.cleanup()


def create_app(results_dir: str | Path, *, weights: str | None = None) -> Flask:
    """The page for the run in ``results_dir``; raises ``MissingFilesError`` if the run is incomplete.

    ``weights`` overrides the run's weights source, as ``predict --weights`` does. The temporary folder is
    removed by ``state(app).close()``, or at interpreter exit at the latest."""
    view = load_run(results_dir)
    temp = tempfile.TemporaryDirectory(prefix="cxr-bench-serve-")
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_MB * 2**20
    app.jinja_loader = DictLoader(pages.TEMPLATES)
    app.jinja_env.globals.update(template_helpers(), css=pages.CSS, view=view, run_files=READ_FILES)
    app.extensions[EXTENSION] = ServeState(view, PredictionService(view, Path(temp.name), weights), temp)
    _pages(app)
    _files(app)
    _api(app)
    _errors(app)
    return app


def state(app: Flask) -> ServeState:
    """The ``ServeState`` of an app made by ``create_app``."""
    return app.extensions[EXTENSION]


def _pages(app: Flask) -> None:
    service = state(app).service

    @app.get("/")
    def run_page():
        """The run: leaderboard, plots, rule, data, provenance."""
        return render_template("run.html", page="run")

    @app.get("/predict")
    def predict_page():
        """The upload page."""
        limit = app.config["MAX_CONTENT_LENGTH"]
        return render_template("predict.html", page="predict", service=service, max_files=MAX_FILES,
                               limit_bytes=limit, limit_mb=limit // 2**20, keep=KEEP_HEATMAPS)  # fmt: skip


def _files(app: Flask) -> None:
    view, service = state(app).view, state(app).service

    @app.get("/plots/<name>")
    def plot_file(name: str):
        """One of the run's known plots."""
        plot = view.plot(name)
        if plot is None or not plot.present:
            abort(404, f"the run has no plot called {name!r}")
        return _send_inside(view.results_dir, run_folder.plot_file(plot.name))

    @app.get("/files/<name>")
    def run_file(name: str):
        """One of the run's top-level reports, as it is."""
        if name not in READ_FILES:  # the page serves the run's top-level files it reads, nothing else, raw
            abort(404, f"not one of the run's files ({', '.join(READ_FILES)})")
        return _send_inside(view.results_dir, name)

    @app.get("/heatmaps/<token>.png")
    def heatmap_file(token: str):
        """A heatmap this server made."""
        path = service.heatmap(token)
        if path is None or not path.is_file():
            abort(404, "no such heatmap (the server keeps the last ones only, until it stops)")
        return send_file(path, mimetype="image/png", max_age=0)


def _send_inside(folder: Path, name: str):
    """``folder/name``, if it is a file that really lies inside ``folder`` (a symbolic link out is refused)."""
    joined = safe_join(str(folder), name)
    if joined is None:
        abort(404, "outside the results folder")
    path = Path(joined)
    if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
        abort(404, f"{name} is not a file inside the results folder")
    return send_file(path, max_age=0)


def _api(app: Flask) -> None:
    service = state(app).service

    @app.post("/api/predict")
    def api_predict():
        """Each uploaded image's answer as JSON: 200, or 422 when none could be read."""
        uploads = uploads_of(request.files.getlist("images"))
        try:
            answer = service.predict(request.form.get("backbone") or None, request.form.get("method", "auto"),
                                     uploads)  # fmt: skip
        except Busy as error:
            return jsonify(error=str(error)), 503, {"Retry-After": "5"}
        except PredictionError as error:
            return jsonify(error=str(error)), error.status
        if not any(image["ok"] for image in answer["images"]):
            return jsonify({**answer, "error": "no image could be read; the reasons are below"}), 422
        return jsonify(answer)


def _errors(app: Flask) -> None:
    @app.errorhandler(413)
    def too_large(error: HTTPException):
        """The upload limit, stated."""
        limit = app.config["MAX_CONTENT_LENGTH"]
        message = f"the upload is too large: the limit is {limit / 2**20:g} MB per request ({MAX_FILES} images at most)"
        return _error_answer(413, "Payload Too Large", message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        """Any other HTTP error, with its reason."""
        return _error_answer(error.code or 500, error.name, error.description or "")


def _error_answer(code: int, name: str, message: str):
    """JSON for the API, a short page for a browser."""
    if request.path.startswith("/api/"):
        return jsonify(error=message), code
    return render_template("error.html", page="", code=code, name=name, message=message), code
