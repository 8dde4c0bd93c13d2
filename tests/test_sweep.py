"""The sweep layer: executors agree, a killed sweep resumes, failures are recorded, seeds are stable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.runs.cli import main
from ntkframe.runs.config import Field
from ntkframe.runs.experiments import Experiment, run_experiment
from ntkframe.core.store import Store
from ntkframe.plugins import register_plugin, unregister_plugin
from ntkframe.runs.rundir import RunContext
from ntkframe.runs.sweep import Runner, Task, execute, task_seed

SEEDS = 16
WIDTH_SWEEP = """
[backend]
name = "numpy"
[experiment]
kind = "width"
widths = {widths}
reference_width = {reference}
seeds = {seeds}
[data]
n = {n}
d = 4
"""
CFG = WIDTH_SWEEP.format(widths=[16, 64], reference=8192, seeds=SEEDS, n=64)
NOT_MEASURED = ("wall_time_s", "provenance", "executor")


def quiet(*args, **kwargs) -> None:
    pass


def measured(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    return {k: v for k, v in res.items() if k not in NOT_MEASURED}


def assert_same_run(a: Path, b: Path) -> None:
    """Same measured values in results.json and arrays.npz (to 1e-12; they are in fact bit-identical)."""
    ra, rb = measured(a), measured(b)
    assert ra.keys() == rb.keys()
    pa = {(p["width"], p["replicate"]): p for p in ra.pop("points")}
    pb = {(p["width"], p["replicate"]): p for p in rb.pop("points")}
    assert pa.keys() == pb.keys()
    for key in pa:
        for name in ("seed", "reference_seed"):
            assert pa[key][name] == pb[key][name]
        np.testing.assert_allclose([pa[key]["rel_fro"], pa[key]["rel_spectral"]],
                                   [pb[key]["rel_fro"], pb[key]["rel_spectral"]], rtol=1e-12, atol=0)
    assert _close(ra, rb), (ra, rb)
    with np.load(a / "arrays.npz") as xa, np.load(b / "arrays.npz") as xb:
        assert sorted(xa.files) == sorted(xb.files)
        for name in xa.files:
            np.testing.assert_allclose(xa[name], xb[name], rtol=1e-12, atol=0)


def _close(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y))
    if isinstance(x, float):
        return abs(x - y) <= 1e-12 * max(abs(x), abs(y))
    return x == y


def _config_file(tmp_path_factory, text: str, name: str) -> Path:
    path = tmp_path_factory.mktemp(name) / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return _config_file(tmp_path_factory, CFG, "sweep")


@pytest.fixture(scope="module")
def serial_run(config, tmp_path_factory) -> Path:
    """The uninterrupted serial run every other run is compared with."""
    out = tmp_path_factory.mktemp("serial") / "run"
    run_experiment(config, out=out, progress=False, echo=quiet)
    return out


class RecordingBar:
    """A stand-in for tqdm that remembers its total and how far it got."""

    bars: list["RecordingBar"] = []

    def __init__(self, total: int):
        self.total, self.n, self.closed = total, 0, False
        RecordingBar.bars.append(self)

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        self.closed = True


def test_task_seed_is_stable_and_depends_on_base_key_and_salt():
    assert task_seed(0, "seed=0") == 5075508338340254874
    assert task_seed(0, "seed=0", "width=64") == 6802360175000531503
    assert task_seed(7, "width=1024/seed=3", "reference") == 2260562309215094712
    seeds = {task_seed(b, k, s) for b in (0, 1) for k in ("seed=0", "seed=1") for s in ("", "x")}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    store = Store(tempfile.mkdtemp(), {}, kind="run")
    assert store._record_path("width=1024/seed=3") != store._record_path("width=1024_seed=3")
    assert store._record_path("a b/c").name.endswith(".json") and "/" not in store._record_path("a b/c").name


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_executors_give_the_serial_results(executor, config, serial_run, tmp_path, monkeypatch):
    """Processes and a 2-worker Dask LocalCluster give the serial run's measured values."""
    if executor == "dask":
        pytest.importorskip("distributed", reason="the dask executor needs dask[distributed] (the 'dask' extra)")
    RecordingBar.bars = []
    monkeypatch.setattr(RunContext, "progress", lambda self, total=None, **kw: RecordingBar(total))
    run = run_experiment(config, out=tmp_path / executor, executor=executor, workers=2, echo=quiet)
    assert_same_run(serial_run, run)
    res = json.loads((run / "results.json").read_text())
    assert res["executor"]["kind"] == executor and res["executor"]["workers"] == 2
    assert res["failed_tasks"] == []
    assert len(list((run / "tasks").glob("*.json"))) == SEEDS
    # the progress bar counted every completed task
    [bar] = RecordingBar.bars
    assert bar.total == SEEDS and bar.n == SEEDS and bar.closed


def test_a_killed_sweep_resumes_and_ends_with_every_point_exactly_once(config, serial_run, tmp_path):
    run = tmp_path / "killed"
    tasks = run / "tasks"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "ntkframe.runs.cli", "run", str(config), "--out", str(run),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(list(tasks.glob("*.json"))) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("no task finished within 120 s")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = {f.name: f.stat().st_mtime_ns for f in tasks.glob("*.json")}
    assert 2 <= len(finished) < SEEDS, "the kill came too late to test resuming"
    assert not (run / "results.json").exists()

    main(["run", "--resume", str(run), "--no-progress"])

    files = sorted(tasks.glob("*.json"))
    keys = Counter(json.loads(f.read_text())["key"] for f in files)
    assert keys == Counter(f"seed={s}" for s in range(SEEDS))
    assert not list(tasks.glob(".*")), "temporary files left behind"
    # finished points were not run again
    assert {f.name: f.stat().st_mtime_ns for f in files if f.name in finished} == finished
    res = measured(run)
    assert Counter((p["width"], p["replicate"]) for p in res["points"]) == \
        Counter((m, f"seed={s}") for m in (16, 64) for s in range(SEEDS))
    assert_same_run(serial_run, run)


# -- failures -------------------------------------------------------------------------------------

class Flaky(Experiment):
    """A test experiment whose task ``point=<fail>`` raises."""

    name = "flaky_test"
    schema = {"experiment": [Field("kind", str, "flaky_test", "experiment to run"),
                             Field("points", int, 5, "number of points", positive=True)]}
    failing: set[str] = set()
    calls: list[str] = []

    def tasks(self) -> list[Task]:
        return [Task(f"point={i}", {"i": i}) for i in range(self.config["experiment"]["points"])]

    def run_task(self, task: Task) -> dict:
        Flaky.calls.append(task.key)
        if task.key in Flaky.failing:
            raise RuntimeError(f"boom at {task.key}")
        return {"value": task_seed(0, task.key) % 1000}

    def summarise(self, records, ctx) -> dict:
        return {"values": {r["key"]: r["result"]["value"] for r in records}}

    def table(self, results) -> str:
        return f"{len(results['values'])} values"


class FlakyPlugin:
    @nf.hookimpl
    def register_experiments(self, register):
        register("flaky_test", Flaky)


@pytest.fixture
def flaky():
    register_plugin(FlakyPlugin(), name="flaky-test-plugin")
    Flaky.failing, Flaky.calls = {"point=2"}, []
    yield Flaky
    unregister_plugin("flaky-test-plugin")


def test_a_failing_task_is_recorded_with_its_traceback_and_the_sweep_goes_on(flaky, tmp_path):
    cfg = tmp_path / "flaky.toml"
    cfg.write_text('[experiment]\nkind = "flaky_test"\npoints = 5\n')
    lines: list[str] = []
    run = run_experiment(cfg, out=tmp_path / "run", progress=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert flaky.calls == [f"point={i}" for i in range(5)]
    res = json.loads((run / "results.json").read_text())
    assert sorted(res["values"]) == ["point=0", "point=1", "point=3", "point=4"]
    [failure] = res["failed_tasks"]
    assert failure["key"] == "point=2" and failure["error"] == "RuntimeError: boom at point=2"
    assert "Traceback" in failure["traceback"] and "run_task" in failure["traceback"]
    [path] = [f for f in (run / "tasks").glob("*.json") if json.loads(f.read_text())["key"] == "point=2"]
    rec = json.loads(path.read_text())["payload"]
    assert rec["status"] == "failed" and "boom at point=2" in rec["traceback"]
    assert any("1 of 5 tasks failed: RuntimeError: boom at point=2 (1)" in line for line in lines)
    assert any("FAILED point=2: RuntimeError: boom at point=2" in line for line in lines)
    assert "## Failed tasks" in (run / "report.md").read_text()

    # the bug is fixed: resuming runs only the failed task
    flaky.failing, flaky.calls = set(), []
    run_experiment(None, resume=run, progress=False, echo=quiet)
    assert flaky.calls == ["point=2"]
    res = json.loads((run / "results.json").read_text())
    assert res["failed_tasks"] == [] and len(res["values"]) == 5


def test_an_executor_instance_runs_tasks_records_failures_and_counts_progress(flaky, tmp_path):
    config = {"experiment": {"kind": "flaky_test", "points": 6}, "backend": {"name": "numpy", "device": None,
                                                                            "dtype": "float64"}}
    tasks = Flaky(config, None).tasks()
    RecordingBar.bars = []
    with ThreadPoolExecutor(2) as pool:
        recs = execute("flaky_test", config, tasks, tmp_path, executor=pool, progress=RecordingBar)
    assert [r["key"] for r in recs] == [t.key for t in tasks]
    assert [r["status"] for r in recs] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    # a second call finds the finished ones on disk, reruns the failed one, and still counts all of them
    flaky.calls = []
    recs = execute("flaky_test", config, tasks, tmp_path, executor="serial", progress=RecordingBar)
    assert flaky.calls == ["point=2"] and recs[2]["status"] == "failed"
    assert [(b.total, b.n, b.closed) for b in RecordingBar.bars] == [(6, 6, True), (6, 6, True)]


def _square_or_raise(shared, x):
    if x == 3:
        raise ValueError(f"no square for {x} (offset {shared})")
    return x * x + shared


def test_runner_reports_errors_from_worker_processes_and_the_others_go_on():
    with Runner("processes", workers=2, shared=100) as runner:
        got = {o.index: o for o in runner.imap_unordered(_square_or_raise, [(x,) for x in range(6)])}
    assert {i: o.value for i, o in got.items() if o.ok} == {0: 100, 1: 101, 2: 104, 4: 116, 5: 125}
    assert got[3].error == "ValueError: no square for 3 (offset 100)" and "_square_or_raise" in got[3].traceback


def test_bad_executor_and_duplicate_keys_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown executor 'threads'; allowed: 'serial', 'processes', 'dask'"):
        Runner("threads")
    with pytest.raises(ValueError, match="workers=0; allowed: a positive integer"):
        Runner("processes", workers=0)
    with pytest.raises(ValueError, match=r"task keys must be unique; repeated: 'a'"):
        execute("width", {}, [Task("a"), Task("b"), Task("a")], tmp_path)


def test_tasks_in_one_worker_process_reuse_one_backend(monkeypatch):
    """run_one builds the backend once per (name, device, dtype) per process: JAX's jit cache survives."""
    import ntkframe.runs.driver as driver
    from ntkframe.runs.sweep import run_one

    seen = []

    class Recorder:
        def __init__(self, config, be):
            seen.append(be)

        def run_task(self, task):
            return {"key": task.key}

    monkeypatch.setattr(driver, "experiment_class", lambda kind: Recorder)
    cfg = {"backend": {"name": "numpy", "device": "cpu", "dtype": "float64"}}
    records = [run_one("recorder", cfg, {"key": key, "params": {}}) for key in ("a", "b")]
    assert [r["status"] for r in records] == ["ok", "ok"], records
    assert seen[0] is seen[1]
    run_one("recorder", {"backend": {**cfg["backend"], "dtype": "float32"}}, {"key": "c", "params": {}})
    assert seen[2] is not seen[0] and seen[2].dtype_name == "float32"


def test_provenance_records_the_backends_own_blas():
    from ntkframe.runs.rundir import provenance

    be = nf.get_backend("numpy")
    blas = provenance(be)["blas"]
    assert blas == be.blas_info() and blas["path"] in ("ctypes-syrk", "numpy") and blas["library"]
    slow = nf.get_backend("numpy", blas="numpy")
    assert provenance(slow)["blas"]["path"] == "numpy"
    for name in ("torch", "jax"):
        if nf.list_backends()[name]["available"]:
            other = nf.get_backend(name)
            assert provenance(other)["blas"] == other.blas_info() != blas  # torch's MKL is not NumPy's OpenBLAS


# -- fault injection: SIGKILL at a random point, resume, compare bit for bit ---------------------------

FAULT_SEEDS = 10
FAULT_CFG = WIDTH_SWEEP.format(widths=[8, 32], reference=2048, seeds=FAULT_SEEDS, n=32)
PINNED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NTKFRAME_NUM_THREADS": "1"}


def _cli_run(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **PINNED)
    return subprocess.Popen([sys.executable, "-m", "ntkframe.runs.cli", "run", *args, "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def fault_config(tmp_path_factory) -> Path:
    return _config_file(tmp_path_factory, FAULT_CFG, "fault")


@pytest.fixture(scope="module")
def uninterrupted(fault_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _finish(_cli_run(str(fault_config), "--out", str(out)))
    return out


def _payloads(run: Path) -> dict:
    docs = [json.loads(f.read_text()) for f in (run / "tasks").glob("*.json")]
    return {d["key"]: d["payload"] for d in docs}


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_a_sweep_killed_at_a_random_point_resumes_to_the_uninterrupted_result_bit_for_bit(
        executor, fault_config, uninterrupted, tmp_path):
    seed = int(os.environ.get("NTKFRAME_FAULT_SEED", time.time_ns() % 2**32))
    kill_after = np.random.default_rng(seed).integers(1, FAULT_SEEDS - 1)  # records on disk when killed
    where = f"(NTKFRAME_FAULT_SEED={seed}: killed after {kill_after} records)"
    run = tmp_path / "run"
    proc = _cli_run(str(fault_config), "--out", str(run), "--executor", executor, "--workers", "2")
    deadline = time.monotonic() + 120
    try:
        while len(list((run / "tasks").glob("*.json"))) < kill_after:
            assert proc.poll() is None, f"the run ended before it was killed {where}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no progress within 120 s {where}"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    survived = _payloads(run)
    assert 1 <= len(survived) < FAULT_SEEDS, where
    assert (run / ".ntkframe.lock").exists(), "the killed run held the folder's lock"

    out = _finish(_cli_run("--resume", str(run), "--executor", executor, "--workers", "2"))
    assert f"reusing {len(survived)} of {FAULT_SEEDS} finished tasks" in out, where
    assert "took over the lock of process" in out
    # bit for bit: task records, results (but time, provenance, executor) and arrays
    final, reference = _payloads(run), _payloads(uninterrupted)
    assert final == reference, where
    assert {k: final[k] for k in survived} == survived, "a finished task was rerun " + where
    assert measured(run) == measured(uninterrupted), where
    with np.load(run / "arrays.npz") as a, np.load(uninterrupted / "arrays.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a.files), where
    assert not (run / ".ntkframe.lock").exists() and not list((run / "tasks").glob(".*"))
