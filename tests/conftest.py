"""Shared fixtures: small generated datasets (so no test needs the real data), the one helper that runs the
command line in this process, and small runs made once per session for the tests that only read their outputs."""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REAL_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "chest_xray_224"


def _pattern(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey image whose look depends on the class, so a head can learn something."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 60 + 40 * yy + rng.normal(0, 8, (size, size))
    if label == "bacterial":
        cx, cy = rng.uniform(0.3, 0.7, 2)
        base += 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    elif label == "viral":
        base += 50 * np.sin(xx * rng.uniform(25, 35)) * np.sin(yy * rng.uniform(25, 35))
    return np.clip(base, 0, 255).astype(np.uint8)


def write_image(path: Path, label: str, rng: np.random.Generator, size: int = 40) -> None:
    """Save a small grayscale JPEG of class ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pattern(label, rng, size), mode="L").save(path, quality=95)


def make_kermany(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A Kermany-layout tree: ``{split: images per class}``; two images per pneumonia patient."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for i in range(n):
            write_image(root / split / "NORMAL" / f"IM-{split[:2]}{i:04d}-0001.jpeg", "normal", rng)
            patient = f"person{split[:2]}{i // 2}"
            write_image(root / split / "PNEUMONIA" / f"{patient}_bacteria_{i}.jpeg", "bacterial", rng)
            write_image(root / split / "PNEUMONIA" / f"{patient}_virus_{i}.jpeg", "viral", rng)
    return root


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker per CPU core, at most 4 (each imports TensorFlow and builds its own models; more
    workers than that spend memory rather than time on these small tests)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@pytest.fixture
def kermany_root(tmp_path: Path) -> Path:
    """12 train, 2 val and 6 test images per class, Kermany layout."""
    return make_kermany(tmp_path / "chest_xray", {"train": 12, "val": 2, "test": 6})


@pytest.fixture
def real_data() -> Path:
    """The shared real dataset; the test is skipped where it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


# The pre-probe default grid point: one Adam head, no probe, for tests about the pipeline rather than the grid.
ONE_HEAD = ("--lr", "1e-3", "--dropout", "0.2", "--l2", "0", "--no-probe")
# The same head and two logistic-regression probe penalties: each backbone reports its head and its probe.
HEAD_AND_PROBE = ("--lr", "1e-3", "--dropout", "0.2", "--l2", "0", "--probe-l2", "0.1", "1")
# The small run: MobileNetV2 at 32 px, 3 epochs, heads trained in this process. The default runtime (auto) is
# what the session's shared runs use (small_run, probe_run: read by the predict, serve, verify and report tests)
# and tests/test_precision_runtime.py; the other pipeline tests pin Keras, since OpenVINO's conversion into each
# fresh cache folder costs seconds a run, and what they test does not depend on the runtime.
DEFAULT_SMALL = ("--backbones", "MobileNetV2", "--image-size", "32", "--epochs", "3", "--patience", "2",
                 "--head-workers", "1")  # fmt: skip
# --no-plots: the pipeline tests read tables, not pictures, and drawing is about 40% of a small run (the shared
# runs, built with DEFAULT_SMALL, keep their plots for the tests of the figures, the web page and verify).
SMALL = (*DEFAULT_SMALL, "--runtime", "keras", "--no-plots")
DRAWN = (*DEFAULT_SMALL, "--runtime", "keras")  # SMALL with its figures: for the tests that look at them
# Only what every run needs (the data, random weights, no progress bars, the two folders): for tests that pass
# every other option themselves, or that must fail before any work.
PLAIN = {"preset": (), "grid": ()}
# 6 epochs, one Adam head and two probe penalties: each backbone reports its head and its probe (Keras pinned and
# the heads trained in this process, as in SMALL: the worker processes have tests of their own, in test_sweep).
LONGER = {"preset": ("--epochs", "6", "--patience", "3", "--runtime", "keras", "--head-workers", "1", "--no-plots"),
          "grid": HEAD_AND_PROBE}  # fmt: skip
LONGER_DRAWN = {**LONGER, "preset": LONGER["preset"][:-1]}  # with its figures


def run_small_benchmark(
    root: Path,
    out: Path,
    *extra: str,
    grid: tuple[str, ...] = ONE_HEAD,
    preset: tuple[str, ...] = SMALL,
    results: str = "results",
) -> int:
    """``run_benchmark.main`` on ``root``, in this process: random weights, no progress bars, reports in
    ``out/<results>``, features in ``out/cache``. By default the small run (``preset``: MobileNetV2 at 32 px,
    3 epochs, one process) with one head and no probe (``grid``); ``extra`` comes last, so its flags win."""
    import run_benchmark

    return run_benchmark.main(
        ["--data", str(root), "--weights", "none", "--no-progress", "--results-dir", str(out / results),
         "--cache-dir", str(out / "cache"), *preset, *grid, *extra]
    )  # fmt: skip


# Registry entries built by one test only (tests/test_backbones.py, their feature size and FLOPs): a bfloat16 check
# and a weights round trip build each network twice more, 1.4 to 7 s a build on 2 cores (EfficientNetV2L the
# most), so the bfloat16 check runs on one network of each new family (DenseNet121, EfficientNetV2B0,
# ConvNeXtTiny). The Keras 3 round trip, the same code for every network, stays on the older entries; DenseNet121
# loads from a weights folder in tests/test_densenet.py (a whole classifier's Keras 2 file).
BUILT_ONCE = ("DenseNet169", "DenseNet201", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
              "EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L")  # fmt: skip


def slow_except(names, *fast: str) -> list:
    """``names`` as parameters, all but ``fast`` marked slow: the quick suite builds only ``fast``, the full suite
    every backbone."""
    return [pytest.param(name, marks=() if name in fast else pytest.mark.slow) for name in names]


@dataclass(frozen=True)
class SmallRun:
    """A finished small run (``run_small_benchmark``) on a 12/2/6 Kermany fixture.

    Shared by the whole session: read it, never change it. A test that changes the outputs or runs again on
    them works on a copy (``copy_to``)."""

    root: Path  # the data it ran on (run again on the same folder: the cache keys name it)
    base: Path  # holds results/ and cache/

    @property
    def results(self) -> Path:
        return self.base / "results"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    def rerun(self, out: Path, *extra: str) -> int:
        """The same command again on the same data (``DEFAULT_SMALL``, one head), its outputs in ``out``."""
        return run_small_benchmark(self.root, out, *extra, preset=DEFAULT_SMALL)

    def copy_to(self, out: Path) -> Path:
        """The run's results and feature cache copied to ``out/results`` and ``out/cache``; ``out``."""
        shutil.copytree(self.results, out / "results")
        shutil.copytree(self.cache, out / "cache")
        return out


def _finished_run(base: Path, *extra: str, grid: tuple[str, ...] = ONE_HEAD) -> SmallRun:
    """``run_small_benchmark`` on a fresh 12/2/6 Kermany fixture in ``base``, under umask 022 (so the modes of
    what it wrote can be checked: test_outputs_respect_the_umask)."""
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    previous = os.umask(0o022)
    try:
        code = run_small_benchmark(root, base, *extra, grid=grid, preset=DEFAULT_SMALL)
    finally:
        os.umask(previous)
    assert code == 0
    return SmallRun(root, base)


def _once_per_session(tmp_path_factory, name: str, build: Callable[[Path], SmallRun]) -> SmallRun:
    """``build(base)`` once per test session: under pytest-xdist the first worker to ask builds it in the folder
    that all workers of the session share (``basetemp``'s parent), holding a lock, and the others wait for it and
    read the same run; without xdist, in this session's own temporary folder."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / name
    with open(shared.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (shared / "built").is_file():
                return SmallRun(shared / "data", shared)
            if shared.exists():  # a worker that failed part-way: build again from nothing
                shutil.rmtree(shared)
            shared.mkdir()
            run = build(shared)
            (shared / "built").touch()
            return run
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Under pytest-xdist the first two workers each build one of the shared runs as their first test starts (where a
# selected test uses it), rather than one worker waiting idle while the other builds both.
BUILT_EARLY = {"gw0": "small_run", "gw1": "probe_run"}
_SHARED_RUNS_USED = pytest.StashKey[set]()


# A fixture built once per module or class (a run, a cluster, a browser): its file's tests go to one worker.
_SHARED_FIXTURE = re.compile(r"""@pytest\.fixture\([^)]*scope=["'](?:module|class|package)["']""")


@functools.cache
def _files_with_shared_fixtures(root: Path) -> frozenset[str]:
    """The test files that define a fixture built once per module or class, named as node ids name them (relative
    to ``root``, the rootdir)."""
    tests = Path(__file__).resolve().parent
    return frozenset(path.relative_to(root).as_posix() for path in sorted(tests.glob("test_*.py"))
                     if _SHARED_FIXTURE.search(path.read_text(encoding="utf-8")))  # fmt: skip


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` as this suite means it: each test to whichever worker is free, but the tests of a file
    with a shared fixture (``_files_with_shared_fixtures``) as one unit, so one worker builds the fixture once.

    pytest-xdist's own loadgroup reads ``xdist_group`` marks by renaming ``item._nodeid``, which pytest 9 no longer
    reads: its groups come apart silently, and each worker built such a fixture again (measured: test_finetune's
    fine-tuned run built on both workers). Its scope scheduler with our own units does what was meant.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    grouped = _files_with_shared_fixtures(config.rootpath)

    class SharedFixtureFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return file if file in grouped else nodeid

    return SharedFixtureFiles(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """The order of work for the parallel suite: the files with a shared fixture first, then the other slow tests,
    then the quick ones. The long pieces start early and the short ones at the end even out the workers' finishing
    times, where files handed out whole, the most tests first, left the one-test file of the six-backbone run to the
    end and the other worker idle meanwhile. (pytest-xdist queues its units by their number of tests, largest
    first, then in this order.)"""
    grouped = _files_with_shared_fixtures(config.rootpath)

    def cost_class(item: pytest.Item) -> int:
        if item.nodeid.split("::", 1)[0] in grouped:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=cost_class)  # stable: a file's tests keep their order


def pytest_collection_finish(session) -> None:
    """Note which shared runs the selected tests use (after -m and -k have deselected)."""
    session.config.stash[_SHARED_RUNS_USED] = {name for item in session.items for name in BUILT_EARLY.values()
                                               if name in getattr(item, "fixturenames", ())}  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def machine_memo(tmp_path_factory) -> Iterator[Path]:
    """The machine-wide memo of measured runtime and precision choices (``CXR_BENCH_HOME``) in a folder that every
    worker of this test session shares, never the user's: each backbone and size is measured once per session."""
    home = tmp_path_factory.getbasetemp()
    home = (home.parent if "PYTEST_XDIST_WORKER" in os.environ else home) / "cxr-bench-home"
    with pytest.MonkeyPatch.context() as session_patch:  # the monkeypatch fixture is per test
        session_patch.setenv("CXR_BENCH_HOME", str(home))
        yield home


@pytest.fixture
def own_machine_memo(tmp_path: Path, monkeypatch) -> Path:
    """An empty machine-wide memo for this test alone: for tests that inject timings and count measurements."""
    home = tmp_path / "cxr-bench-home"
    monkeypatch.setenv("CXR_BENCH_HOME", str(home))
    return home


@pytest.fixture(scope="session", autouse=True)
def _shared_run_built_early(request, machine_memo) -> None:
    name = BUILT_EARLY.get(os.environ.get("PYTEST_XDIST_WORKER", ""))
    if name in request.config.stash.get(_SHARED_RUNS_USED, set()):
        try:
            request.getfixturevalue(name)
        except (Exception, pytest.skip.Exception, pytest.fail.Exception):
            pass  # a run that cannot be built fails the tests that use it (pytest keeps its error), not every test here


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> SmallRun:
    """``run_small_benchmark`` once per session, with its defaults (one head, no probe): for the tests that only
    read what a small run wrote, or that work on a copy of it."""
    return _once_per_session(tmp_path_factory, "small_run", _finished_run)


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory) -> SmallRun:
    """The small run with the logistic-regression probe beside the head (``HEAD_AND_PROBE``), an operating point
    at sensitivity 0.9 and 200 bootstrap resamples; once per session."""
    extra = ("--target-sensitivity", "0.9", "--bootstrap", "200")
    return _once_per_session(tmp_path_factory, "probe_run",
                             lambda base: _finished_run(base, *extra, grid=HEAD_AND_PROBE))  # fmt: skip
