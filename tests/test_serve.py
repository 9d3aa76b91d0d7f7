"""The local web page (cxr-bench serve): the run's numbers as leaderboard.csv has them, predict's own answers,
bad input answered clearly, nothing written or read outside where it should be, and a real browser using it.

The browser tests drive headless Chromium (Debian's ``chromium``) with Playwright and skip, saying why, where
either is missing. ``CXR_BENCH_SCREENSHOTS=1`` makes them write ``docs/img/serve_run.png`` and
``docs/img/serve_predict.png``; ``CXR_BENCH_SERVE_RESULTS=DIR`` makes them serve that run instead of the
small fixture run (the README's screenshots are of a real run).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmark import predict
from benchmark.__main__ import cxr_bench
from benchmark.config import RunConfig
from benchmark.run_folder import SUBFOLDERS
from benchmark.serve import create_app, main, state
from benchmark.serve.cli import _parser
from benchmark.serve.results import MissingFilesError, checkpoint_files, number
from common.files import write_checksums

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "chest_xray_224"
SHOTS = REPO / "docs" / "img"
METRICS = ("sensitivity", "specificity", "accuracy", "precision", "f1", "auc")
TABLE_COLUMNS = (*METRICS, "val_auc", "val_sensitivity", "val_specificity", "val_f1", "op_threshold",
                 "op_val_sensitivity", "op_test_sensitivity", "op_test_specificity", "ece")  # fmt: skip


@pytest.fixture(scope="module")
def app(probe_run):
    """The page for the small run with a head and a probe (two models to choose from)."""
    made = create_app(probe_run.results)
    yield made
    state(made).close()


@pytest.fixture
def client(app):
    return app.test_client()


def _png(size: int = 48, value: int = 120) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size), value).save(out, format="PNG")
    return out.getvalue()


def _post(client, *files: tuple[bytes, str], **form):
    data = {**form, "images": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/api/predict", data=data, content_type="multipart/form-data")


def _test_image(run) -> Path:
    return sorted((run.root / "test" / "PNEUMONIA").iterdir())[0]


class _Cells(HTMLParser):
    """Every leaderboard cell of the run page: ``{(task, head_id, column): (data-value, shown text)}``."""

    def __init__(self):
        super().__init__()
        self.cells: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.task = self.head = self.column = None
        self.value, self.depth, self.text = "", 0, ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-task" in attrs:
            self.task = attrs["data-task"]
        elif tag == "tr" and "data-head-id" in attrs:
            self.head = attrs["data-head-id"]
        elif tag == "td" and self.head and "data-column" in attrs:
            self.column, self.value, self.text = attrs["data-column"], attrs["data-value"], ""
        elif tag == "span" and self.column and attrs.get("class") == "v":
            self.depth = 1

    def handle_data(self, data):
        if self.depth:
            self.text += data

    def handle_endtag(self, tag):
        if tag == "span":
            self.depth = 0
        elif tag == "td" and self.column:
            self.cells[(self.task, self.head, self.column)] = (self.value, self.text.strip())
            self.column = None


def _check_leaderboard_cells(cells: dict, results: Path) -> None:
    """Each number of leaderboard.csv is on the page: exactly (the sort value) and as the Markdown rounds it."""
    board = pd.read_csv(results / "leaderboard.csv")
    assert len(cells) == len(board) * len(TABLE_COLUMNS)
    for row in board.to_dict("records"):
        for column in TABLE_COLUMNS:
            value, text = cells[(row["task"], row["head_id"], column)]
            assert text == number(row[column]), (row["task"], row["backbone"], column)
            if pd.isna(row[column]):
                assert value == ""
            else:
                assert float(value) == row[column]


def test_the_run_page_shows_every_number_of_the_leaderboard(client, probe_run):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    parser = _Cells()
    parser.feed(html)
    _check_leaderboard_cells(parser.cells, probe_run.results)
    board = pd.read_csv(probe_run.results / "leaderboard.csv")
    row = board.iloc[0]
    assert f'{row["auc_ci_low"]:.2f}–{row["auc_ci_high"]:.2f}' in html  # the bootstrap interval


def test_the_run_page_has_the_banner_the_rule_the_data_and_the_provenance(client, probe_run):
    html = client.get("/").get_data(as_text=True)
    info = json.loads((probe_run.results / "run.json").read_text(encoding="utf-8"))
    # Random-init weights: the Markdown's banner, as loud (its own red box, role alert).
    assert re.search(r'class="banner loud" role="alert"><strong>Weights: none \(random initialisation\)', html)
    assert "lowest validation loss" in html and "Selection rule" in html
    assert re.search(r"<td>train</td><td>\d+</td>", html)  # the data counts per split
    assert "Files left out: 0" in html and "Leakage warnings: 0" in html
    assert info["git"] in html and info["command"].split()[0] in html
    assert f"<td>keras</td><td>{info['versions']['keras']}</td>" in html


def test_skipped_files_and_leakage_are_listed_escaped(tmp_path: Path, probe_run):
    results = shutil.copytree(probe_run.results, tmp_path / "results")
    pd.DataFrame([{"path": "data/train/NORMAL/<script>x</script>.jpeg", "reason": "not an image"}]).to_csv(
        results / "skipped.csv", index=False)  # fmt: skip
    leak = pd.read_csv(results / "leakage.csv")
    leak.loc[0] = ["g1", "ab" * 32, "test", "normal", "data/test/NORMAL/a.jpeg", "same bytes in train and test",
                   "kept"]  # fmt: skip
    leak.to_csv(results / "leakage.csv", index=False)
    write_checksums(results, SUBFOLDERS)  # as a run that found these files would have listed them
    made = create_app(results)
    try:
        html = made.test_client().get("/").get_data(as_text=True)
    finally:
        state(made).close()
    assert "Files left out: 1" in html and "&lt;script&gt;x&lt;/script&gt;.jpeg" in html and "<script>x" not in html
    assert "Leakage warnings: 1" in html and "same bytes in train and test" in html


def test_plots_are_shown_inline_and_a_missing_one_says_so(client, tmp_path: Path, probe_run):
    html = client.get("/").get_data(as_text=True)
    shown = set(re.findall(r'<img src="/plots/([^"]+)"', html))
    assert shown == {p.name for p in (probe_run.results / "plots").iterdir()}
    assert "roc_normal_vs_pneumonia.png" in shown and "confusion_MobileNetV2-logreg.png" in shown
    reply = client.get("/plots/roc_normal_vs_pneumonia.png")
    assert reply.status_code == 200 and reply.mimetype == "image/png"
    assert reply.data == (probe_run.results / "plots" / "roc_normal_vs_pneumonia.png").read_bytes()
    results = shutil.copytree(probe_run.results, tmp_path / "results")
    (results / "plots" / "metric_bars.png").unlink()
    made = create_app(results)
    try:
        html = made.test_client().get("/").get_data(as_text=True)
        assert made.test_client().get("/plots/metric_bars.png").status_code == 404
    finally:
        state(made).close()
    assert "<code>plots/metric_bars.png</code> is missing from the results folder" in html
    assert 'src="/plots/metric_bars.png"' not in html


@pytest.mark.slow  # loads a second predictor to compare with: about 7 s
def test_the_page_answers_with_predict_images_numbers(client, probe_run, tmp_path: Path):
    image = _test_image(probe_run)
    chosen = predict.choose_head(probe_run.results)
    assert f'<option value="{chosen["backbone"]}" selected>' in client.get("/predict").get_data(as_text=True)
    # No model named: the head predict uses without --backbone, with the run's own test probabilities.
    default = _post(client, (image.read_bytes(), image.name)).json
    assert default["model"]["backbone"] == chosen["backbone"] and default["model"]["head_id"] == chosen["head_id"]
    theirs = pd.read_csv(probe_run.results / "predictions.csv")
    theirs = theirs[(theirs["head_id"] == chosen["head_id"]) & theirs["path"].str.endswith(image.name)].iloc[0]
    for label, p in default["images"][0]["probabilities"].items():
        assert p == pytest.approx(theirs[f"p_{label}"], abs=1e-5)
    # The other model, against predict_image itself: identical. Grad-CAM (on the 1x1 map of a 32 px run) rather
    # than auto's occlusion: the same numbers from fewer forward passes.
    other = ({"MobileNetV2", "MobileNetV2-logreg"} - {chosen["backbone"]}).pop()
    answer = _post(client, (image.read_bytes(), image.name), backbone=other, method="gradcam").json
    predictor = predict.load_predictor(probe_run.results, other)
    operating = predict.operating_threshold(probe_run.results, predictor.head_id)
    min_side = RunConfig.from_json(predictor.run.config).min_side()
    row = predict.predict_image(predictor, image, min_side, operating, "gradcam", tmp_path, log=print)
    got = answer["images"][0]
    assert got["ok"] and got["predicted"] == row["predicted"]
    assert got["probabilities"] == {label: row[f"p_{label}"] for label in predictor.classes}
    assert got["decision"]["score"] == row["score"] and got["decision"]["flagged"] == row["flagged"]
    assert answer["model"]["head_id"] == predictor.head_id and answer["model"]["not_medical"]
    heatmap = client.get("/" + got["heatmap"])
    assert heatmap.status_code == 200 and Image.open(io.BytesIO(heatmap.data)).size[0] > 400


@pytest.mark.slow  # loads the run's models for the good upload
def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(app, client, probe_run):
    image = _test_image(probe_run).read_bytes()
    reply = _post(client, (b"just some notes\n", "notes.txt"))
    assert reply.status_code == 422
    assert reply.json["images"][0] == {"name": "notes.txt", "ok": False,
                                       "error": "not an image Pillow can read (unknown or broken format)"}
    reply = _post(client, (image[: len(image) // 2], "cut.jpeg"), (_png(8), "dot.png"), (image, "good.jpeg"))
    assert reply.status_code == 200
    cut, dot, good = reply.json["images"]
    assert not cut["ok"] and "truncated" in cut["error"]
    assert not dot["ok"] and dot["error"].startswith("too small: 8x8 px, below the 32 px minimum")
    assert good["ok"]
    assert "no image in the request" in _post(client).json["error"]
    assert "unknown model 'ResNet50'" in _post(client, (image, "a.jpeg"), backbone="ResNet50").json["error"]
    assert "the limit is 16" in _post(client, *[(image, f"{i}.jpeg") for i in range(17)]).json["error"]
    limit = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 2**20
    try:
        reply = _post(client, (b"\0" * (2 * 2**20), "huge.png"))
    finally:
        app.config["MAX_CONTENT_LENGTH"] = limit
    assert reply.status_code == 413 and reply.json["error"].startswith("the upload is too large: the limit is 1 MB")
    assert "At most 16 images and 64 MB per request" in client.get("/predict").get_data(as_text=True)
    assert _post(client, (image, "again.jpeg")).status_code == 200


def test_a_second_request_while_one_runs_is_told_to_try_again(app, client, probe_run, monkeypatch):
    image = _test_image(probe_run).read_bytes()
    started, release = threading.Event(), threading.Event()
    real = predict.predict_image

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_image", slow)
    first: list = []
    worker = threading.Thread(target=lambda: first.append(_post(app.test_client(), (image, "first.jpeg"))))
    worker.start()
    try:
        assert started.wait(60)
        busy = _post(client, (image, "second.jpeg"))
    finally:
        release.set()
        worker.join(60)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
    assert busy.json["error"].startswith("busy: another prediction is running")
    assert first[0].status_code == 200 and first[0].json["images"][0]["ok"]
    assert _post(client, (image, "third.jpeg")).status_code == 200


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_nothing_is_written_outside_the_temporary_folder(app, client, probe_run):
    results = probe_run.results
    # The run, its data and its cache: nothing in them changes, nothing appears beside them.
    before, around = _listing(results), set(probe_run.base.rglob("*"))
    temp = Path(state(app).temp.name)
    image = _test_image(probe_run).read_bytes()
    client.get("/")
    client.get("/plots/training_curves.png")
    reply = _post(client, (image, "../../../escape.jpeg"), (b"text", "../../notes.txt"))
    assert reply.status_code == 200 and reply.json["images"][0]["ok"]
    assert _listing(results) == before and set(probe_run.base.rglob("*")) == around
    assert not list((temp / "uploads").iterdir())  # each upload is deleted once answered
    token = reply.json["images"][0]["heatmap"].removeprefix("heatmaps/").removesuffix(".png")
    assert state(app).service.heatmap(token).is_relative_to(temp)
    other = create_app(results)
    folder = Path(state(other).temp.name)
    assert folder.is_dir() and folder.parent == Path(tempfile.gettempdir())
    state(other).close()
    assert not folder.exists()


def test_no_request_reads_a_file_outside_the_results_folder(tmp_path: Path, probe_run):
    results = shutil.copytree(probe_run.results, tmp_path / "results")
    (tmp_path / "secret.txt").write_text("SECRET")
    (results / "plots" / "training_curves.png").unlink()
    (results / "plots" / "training_curves.png").symlink_to(tmp_path / "secret.txt")
    made = create_app(results)
    client = made.test_client()
    try:
        assert client.get("/files/run.json").status_code == 200
        for url in ("/files/../secret.txt", "/files/..%2Fsecret.txt", "/files/%2e%2e%2fsecret.txt",
                    "/plots/..%2F..%2Fsecret.txt", "/plots/../../secret.txt", "/heatmaps/..%2F..%2Fsecret.txt.png",
                    "/files/%2Fetc%2Fpasswd", "/files/heads", "/plots/training_curves.png",
                    "/../secret.txt", "/files/..\\secret.txt"):  # fmt: skip
            reply = client.get(url)
            assert reply.status_code == 404, url
            assert b"SECRET" not in reply.data and b"root:" not in reply.data, url
        assert "is not a file inside the results folder" in client.get("/plots/training_curves.png").text
    finally:
        state(made).close()


def test_an_incomplete_results_folder_fails_at_start_naming_the_files(tmp_path: Path, probe_run, capsys):
    results = shutil.copytree(probe_run.results, tmp_path / "results")
    (results / "leakage.csv").unlink()
    head = pd.read_csv(results / "leaderboard.csv")["head_id"].iloc[0]
    (results / "heads" / head / "best.keras").unlink()
    assert main([str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"serve: error: {results} is not a finished run: missing leakage.csv, heads/{head}/best.keras"
    assert cxr_bench(["serve", str(tmp_path / "nowhere")]) == 2
    assert "missing the folder itself" in capsys.readouterr().err
    with pytest.raises(MissingFilesError) as error:
        create_app(results)
    assert error.value.missing == ["leakage.csv", f"heads/{head}/best.keras"]


def test_the_models_a_prediction_loads_are_checked_fine_tuned_ones_too():
    board = pd.DataFrame({"backbone": ["A", "A", "A-ft", "A-logreg"], "head_id": ["h1", "h1", "f1", "p1"]})
    assert checkpoint_files(board) == ["heads/h1/best.keras", "finetune/f1/result.json",
                                       "finetune/f1/model.weights.h5", "heads/p1/best.keras"]  # fmt: skip


def test_the_ensemble_is_offered_answers_as_the_run_did_and_needs_its_members_files(client, probe_run):
    board = pd.read_csv(probe_run.results / "leaderboard.csv")
    ensemble = board[board["backbone"] == "ensemble"]
    assert not ensemble.empty, "probe_run's validation split cannot tell its head from its probe: they are averaged"
    ensemble = ensemble.iloc[0]
    assert '<option value="ensemble" selected>ensemble (selected on validation)</option>' in client.get(
        "/predict").get_data(as_text=True)  # fmt: skip
    assert '<span class="settings">mean of MobileNetV2-logreg, MobileNetV2</span>' in client.get("/").text
    image = _test_image(probe_run)
    answer = _post(client, (image.read_bytes(), image.name), backbone="ensemble", method="gradcam").json
    assert answer["model"]["head_id"] == ensemble["head_id"]
    assert answer["model"]["operating"]["threshold"] == ensemble["op_threshold"]
    theirs = pd.read_csv(probe_run.results / "predictions.csv")
    theirs = theirs[(theirs["head_id"] == ensemble["head_id"]) & theirs["path"].str.endswith(image.name)].iloc[0]
    for label, p in answer["images"][0]["probabilities"].items():
        assert p == pytest.approx(theirs[f"p_{label}"], abs=1e-5)
    files = checkpoint_files(board)
    assert len(files) == 2 and all(file.startswith("heads/") and "ensemble" not in file for file in files)


def test_the_ensembles_files_are_its_members_files():
    board = pd.DataFrame({"backbone": ["A", "A-ft", "ensemble"], "head_id": ["h1", "f1", "ensemble:h1+f1+x9"]})
    # x9, not on the leaderboard, is taken for a plain head: its missing file is then named at start.
    assert checkpoint_files(board) == ["heads/h1/best.keras", "finetune/f1/result.json",
                                       "finetune/f1/model.weights.h5", "heads/x9/best.keras"]  # fmt: skip


def test_a_port_in_use_is_a_clear_error(probe_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main([str(probe_run.results), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"serve: error: cannot listen on 127.0.0.1:{port}" in err and "choose another --port" in err


@pytest.mark.slow  # a second process, which loads TensorFlow
def test_serve_listens_on_loopback_prints_its_address_and_cleans_up(probe_run):
    assert _parser().parse_args(["x"]).host == "127.0.0.1"
    command = [sys.executable, "-m", "benchmark.serve", str(probe_run.results), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        line = server.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) .*go to (\S+), removed", line)
        assert found, line
        from urllib.request import urlopen

        with urlopen(found.group(1), timeout=30) as fh:
            assert b"MobileNetV2-logreg" in fh.read()
        temp = Path(found.group(2))
        assert temp.is_dir()
    finally:
        server.send_signal(signal.SIGTERM)  # `kill`: stops it as Ctrl-C does
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0 and f"stopped; removed {temp}" in out
    assert not temp.exists()


# The browser tests ------------------------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def _chromium() -> str | None:
    for candidate in (os.environ.get("CXR_BENCH_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright; skipped, saying why, when either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium: apt-get install chromium (or set CXR_BENCH_CHROMIUM to its path)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def live(request):
    """``(base URL, results folder)`` of a real server on a free loopback port, in a thread."""
    from werkzeug.serving import make_server

    given = os.environ.get("CXR_BENCH_SERVE_RESULTS")
    # The fixture run's app is the module's (its models are built once); another run gets its own.
    made = create_app(given) if given else request.getfixturevalue("app")
    server = make_server("127.0.0.1", 0, made, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", state(made).view.results_dir
    server.shutdown()
    thread.join(30)
    if given:
        state(made).close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 1000}, device_scale_factor=1)
    yield context.new_page()
    context.close()


def _screenshot(page, name: str, full_page: bool) -> None:
    """The README's screenshot, written only when asked (CXR_BENCH_SCREENSHOTS=1), as a small PNG."""
    if os.environ.get("CXR_BENCH_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    shot.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(SHOTS / name, optimize=True)


def test_a_browser_sees_the_leaderboard_sorts_it_and_loads_the_plots(page, live):
    url, results = live
    page.goto(url)
    cells = page.eval_on_selector_all(
        "table.board tbody td[data-column]",
        "tds => tds.map(td => [td.closest('table').dataset.task, td.closest('tr').dataset.headId, td.dataset.column,"
        " td.dataset.value, td.querySelector('.v').textContent])",
    )
    _check_leaderboard_cells({tuple(c[:3]): (c[3], c[4]) for c in cells}, results)
    banners = [line[2:].replace("**", "").replace("`", "") for line in
               (results / "leaderboard.md").read_text(encoding="utf-8").split("\n## ")[0].splitlines()
               if line.startswith("> ")]  # fmt: skip
    assert page.locator(".banner").all_inner_texts() == banners
    table = page.locator("table.board").first
    column = table.locator("thead th[data-column='auc']")
    column.click()
    shown = [float(v) for v in table.locator("td[data-column='auc']").evaluate_all("t => t.map(c => c.dataset.value)")]
    assert shown == sorted(shown, reverse=True) and column.get_attribute("data-order") == "desc"
    column.click()
    shown = [float(v) for v in table.locator("td[data-column='auc']").evaluate_all("t => t.map(c => c.dataset.value)")]
    assert shown == sorted(shown)
    page.goto(url)  # the Markdown's order again, for the screenshot
    # The plots load lazily, once near the view: below the report's sections, they are far down the page.
    page.locator("#plots").scroll_into_view_if_needed()
    page.wait_for_function("() => Array.from(document.querySelectorAll('#plots img')).every(i => i.complete)")
    widths = page.eval_on_selector_all("#plots img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert widths and all(widths), "every plot loads"
    page.evaluate("window.scrollTo(0, 0)")
    _screenshot(page, "serve_run.png", full_page=False)


def _drop(page, path: Path) -> None:
    """Drag and drop ``path`` onto the page's drop zone, as a person would from a file manager."""
    data = list(path.read_bytes())
    page.evaluate(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer}));
        }""",
        [path.name, data],
    )


@pytest.mark.slow  # drives predict through the browser: loads the run's models
def test_a_browser_uploads_an_xray_and_a_text_file(page, live, tmp_path: Path, request):
    url, results = live
    real = sorted((REAL_DATA / "test" / "PNEUMONIA").glob("*.jpeg"))[:1] if REAL_DATA.is_dir() else []
    # Without the shared data, an image of the fixture run stands in for the real X-ray.
    image = real[0] if real else _test_image(request.getfixturevalue("probe_run"))
    page.goto(url + "predict")
    assert page.locator("#backbone").input_value() == predict.choose_head(results)["backbone"]
    _drop(page, image)
    page.click("#submit")
    card = page.locator(".image-result").first
    card.locator("img.heatmap").wait_for()
    page.wait_for_function("() => document.querySelector('img.heatmap').naturalWidth > 0")
    shown = card.locator("td.p").evaluate_all("t => t.map(c => [c.closest('tr').dataset.class, c.dataset.value])")
    predictor = predict.load_predictor(results)
    operating = predict.operating_threshold(results, predictor.head_id)
    min_side = RunConfig.from_json(predictor.run.config).min_side()
    row = predict.predict_image(predictor, image, min_side, operating, "auto", tmp_path, log=print)
    assert {name: float(value) for name, value in shown} == {c: row[f"p_{c}"] for c in predictor.classes}
    assert card.locator(".decision").inner_text().startswith(f"{row['task']}: P(")
    _screenshot(page, "serve_predict.png", full_page=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an X-ray\n")
    page.set_input_files("#files", str(notes))
    page.click("#submit")
    page.locator(".image-result.failed").wait_for()
    assert page.locator(".image-result.failed .error").inner_text() == (
        "Not read: not an image Pillow can read (unknown or broken format)")  # fmt: skip
    assert "no image could be read" in page.locator("#status").inner_text()
