"""A local web page for a finished run: its leaderboard and plots, and one image's answer with its heatmap.

    cxr-bench serve RESULTS_DIR [--host 127.0.0.1] [--port 8000] [--weights DIR]
    python -m benchmark.serve RESULTS_DIR ...

The run page shows what ``leaderboard.md`` shows, from the run's own files:
the leaderboard per task (intervals, validation beside test, operating
points, calibration; sortable by any column), the plots, the selection rule,
the data counts, the skipped files, the leakage warnings and the provenance,
under the same random-init / phantom-data banner. The one-image page takes
uploads (drag and drop, several at once) and answers with
``benchmark.predict.predict_image``, the code ``cxr-bench predict`` runs, so
the numbers are identical.

Why Flask: a page with two views, a file upload and a JSON endpoint is what a
small standard web framework is for, and Flask is the long-kept, small one
(with Werkzeug underneath: the request parsing, the upload size limit
``MAX_CONTENT_LENGTH``, ``safe_join``, the threaded server). The page is plain
HTML with a little vanilla JavaScript, all inline. Gradio, what ML demos
usually use, was the other candidate: it fetches parts of its front end
(fonts, and on some versions scripts) from the network, which this offline
machine cannot reach, it pulls in a large dependency tree (FastAPI, uvicorn,
httpx, pydantic, ...), and its components show a model's output well but a
sortable multi-table leaderboard and a run's provenance awkwardly. Hand-written
HTTP (``http.server``) would mean parsing multipart uploads ourselves.

The server is for one person on their own machine: it listens on loopback
(``127.0.0.1``) unless ``--host`` says otherwise, runs one prediction at a time
(a second request meanwhile is answered 503 "busy, try again"), writes only
into its own temporary folder (deleted when it stops), and sends only the
run's known files.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything below loads TensorFlow

from benchmark.serve.app import create_app, state  # noqa: E402
from benchmark.serve.cli import main  # noqa: E402

__all__ = ["create_app", "main", "state"]
