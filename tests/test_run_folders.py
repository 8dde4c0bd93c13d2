"""Run folders never hand back stale or silent wrong results (issue 13, findings 1, 2, 4, 5, 6, 9).

Each test reruns a case of the issue: another config into an old run folder, a resume with other
settings, a user's folder as --out, a second run on a live run's folder, an odd --out, an unreachable
Dask scheduler, a sweep whose tasks fail, a run too large for memory, and an unguarded script with a
process pool.  Every one of them passed silently (or hung) before; now each is refused or reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ntkframe.errors import ConfigError, NotAStoreError, StoreLockedError, StoreMismatchError
from ntkframe.runs.cli import main
from ntkframe.runs.driver import run_experiment
from ntkframe.runs.experiments.width import WidthConvergence

TINY = """
[experiment]
kind = "width"
widths = [8, 16]
reference_width = 64
seeds = 2
[model]
activation = "{act}"
[data]
n = {n}
d = 3
"""


def quiet(*args, **kwargs) -> None:
    pass


def _config(tmp_path: Path, act: str = "softplus", n: int = 8, name: str = "a.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(act=act, n=n))
    return path


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- finding 1: another config into an old run folder; a user's folder as --out -----------------------

def test_another_config_into_an_old_run_folder_is_refused_listing_what_differs(tmp_path):
    run = run_experiment(_config(tmp_path), out=tmp_path / "R", progress=False, echo=quiet)
    before = (run / "results.json").read_text()
    with pytest.raises(StoreMismatchError) as info:
        run_experiment(_config(tmp_path, act="relu", name="b.toml"), out=run, progress=False, echo=quiet)
    message = str(info.value)
    assert "config.model.activation: 'softplus' → 'relu'" in message
    assert f"--resume {run}" in message and "--overwrite" in message
    assert (run / "results.json").read_text() == before, "the old run was written into"
    with pytest.raises(StoreMismatchError, match=r"config.data.n: 8 → 12"):
        run_experiment(_config(tmp_path, n=12, name="c.toml"), out=run, progress=False, echo=quiet)


def test_the_same_config_into_its_run_folder_resumes_and_says_so(tmp_path):
    cfg = _config(tmp_path)
    run = run_experiment(cfg, out=tmp_path / "R", progress=False, echo=quiet)
    lines: list[str] = []
    run_experiment(cfg, out=run, progress=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert any(line.startswith(f"resuming {run}") for line in lines), lines
    assert any("reusing 2 of 2 finished tasks" in line for line in lines), lines


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text('{"my": "own results"}\n')
    code, _, err = _cli(["run", str(_config(tmp_path)), "--out", str(mine), "--no-progress"], capsys)
    assert code == 2 and "is not an ntkframe run folder" in err and "never overwritten" in err
    assert sorted(p.name for p in mine.iterdir()) == ["results.json"]
    assert (mine / "results.json").read_text() == '{"my": "own results"}\n'
    # --overwrite deletes only an ntkframe run's files: a user's folder is refused all the same
    code, _, err = _cli(["run", str(_config(tmp_path)), "--out", str(mine), "--overwrite", "--no-progress"], capsys)
    assert code == 2 and "refusing to delete anything" in err
    assert (mine / "results.json").read_text() == '{"my": "own results"}\n'


def test_overwrite_replaces_a_run_and_keeps_the_users_own_files(tmp_path, capsys):
    run = run_experiment(_config(tmp_path), out=tmp_path / "R", progress=False, echo=quiet)
    (run / "notes.txt").write_text("my notes\n")
    code, out, _ = _cli(["run", str(_config(tmp_path, act="relu", name="b.toml")), "--out", str(run),
                         "--overwrite", "--no-progress"], capsys)
    assert code == 0 and "kept, not written by ntkframe: notes.txt" in out
    assert json.loads((run / "config.json").read_text())["model"]["activation"] == "relu"
    assert (run / "notes.txt").read_text() == "my notes\n" and not (run / "a.toml").exists()


def test_config_json_names_the_folder_actually_used(tmp_path):
    run = run_experiment(_config(tmp_path), out=tmp_path / "R", progress=False, echo=quiet)
    assert json.loads((run / "config.json").read_text())["output"]["dir"] == str(tmp_path / "R")


# -- finding 2: resume with settings that change the results -----------------------------------------

def test_resume_with_another_backend_or_dtype_is_refused_with_the_difference(tmp_path, capsys):
    run = run_experiment(_config(tmp_path), out=tmp_path / "R", progress=False, echo=quiet)
    records = sorted((p.name, p.read_bytes()) for p in (run / "tasks").iterdir())
    code, _, err = _cli(["run", "--resume", str(run), "--dtype", "float32", "--no-progress"], capsys)
    assert code == 2 and "cannot resume" in err and "config.backend.dtype: 'float64' → 'float32'" in err
    if importable("torch"):
        code, _, err = _cli(["run", "--resume", str(run), "--backend", "torch", "--dtype", "float32"], capsys)
        assert code == 2 and "config.backend.name: 'numpy' → 'torch'" in err
    assert sorted((p.name, p.read_bytes()) for p in (run / "tasks").iterdir()) == records
    assert json.loads((run / "config.json").read_text())["backend"]["dtype"] == "float64"
    # what does not change results may change: the executor
    code, _, _ = _cli(["run", "--resume", str(run), "--executor", "serial", "--no-progress"], capsys)
    assert code == 0


def importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


# -- finding 9: two processes on one run folder ----------------------------------------------------

SLOW = """
[experiment]
kind = "width"
widths = [16, 64]
reference_width = 4096
seeds = 200
[data]
n = 64
d = 4
"""


def test_a_second_run_on_a_live_runs_folder_is_refused_naming_its_process(tmp_path, capsys):
    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW)
    run = tmp_path / "R"
    proc = subprocess.Popen([sys.executable, "-m", "ntkframe.runs.cli", "run", str(cfg), "--out", str(run),
                             "--no-progress"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list((run / "tasks").glob("*.json")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no task finished within 120 s"
            time.sleep(0.01)
        code, _, err = _cli(["run", "--resume", str(run), "--no-progress"], capsys)
        assert code == 2 and f"in use by process {proc.pid}" in err and "two runs must not write one folder" in err
        with pytest.raises(StoreLockedError):
            run_experiment(cfg, out=run, progress=False, echo=quiet)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    # the killed run's lock is stale: a resume takes it over and finishes
    lines: list[str] = []
    run_experiment(None, resume=run, progress=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert any("took over the lock of process" in line for line in lines)
    assert not (run / ".ntkframe.lock").exists()


# -- finding 6: an odd --out, an unreachable Dask scheduler ------------------------------------------

def test_an_odd_out_is_a_clear_error_before_anything_is_created(tmp_path, capsys):
    cfg = _config(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = _cli(["run", str(cfg), "--out", str(afile)], capsys)
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = _cli(["run", str(cfg), "--out", str(afile / "sub" / "run")], capsys)
    assert code == 2 and "cannot be created" in err and "is a file" in err
    assert afile.read_text() == "x"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = _cli(["run", str(cfg), "--out", str(locked / "run")], capsys)
        assert code == 2 and "no permission" in err and not list(locked.iterdir())


def test_an_unreachable_dask_scheduler_fails_fast_without_a_run_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NTKFRAME_DASK_CONNECT_TIMEOUT", "2")
    code, _, err = _cli(["run", str(_config(tmp_path)), "--out", str(tmp_path / "R"), "--executor", "dask",
                         "--address", f"tcp://127.0.0.1:{port}"], capsys)
    assert code == 2 and f"no Dask scheduler answered at address 'tcp://127.0.0.1:{port}' within 2 s" in err
    assert not (tmp_path / "R").exists()


# -- finding 5: failures are loud; memory is estimated first -------------------------------------------

def test_a_sweep_whose_every_task_failed_says_why_and_exits_3(tmp_path, capsys, monkeypatch):
    def no_memory(self, task):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)")

    monkeypatch.setattr(WidthConvergence, "run_task", no_memory)
    code, out, err = _cli(["run", str(_config(tmp_path)), "--out", str(tmp_path / "R"), "--no-progress"], capsys)
    assert code == 3, err
    assert "2 of 2 tasks failed: MemoryError: Unable to allocate 74.5 GiB" in out and "(2)" in out
    assert "log-scaled" not in out + err and "Traceback" not in err
    report = (tmp_path / "R" / "report.md").read_text()
    assert "all 2 tasks failed" in report and "## Failed tasks" in report
    assert not list((tmp_path / "R").glob("*.png"))


def test_some_failed_tasks_are_summarised_before_the_figures_left_out_of_them_and_exit_3(tmp_path, capsys,
                                                                                         monkeypatch):
    run_task = WidthConvergence.run_task

    def flaky(self, task):
        if task.key.endswith("seed=1"):
            raise RuntimeError("worker killed")
        return run_task(self, task)

    monkeypatch.setattr(WidthConvergence, "run_task", flaky)
    code, out, _ = _cli(["run", str(_config(tmp_path)), "--out", str(tmp_path / "R"), "--no-progress"], capsys)
    assert code == 3
    summary = out.index("1 of 2 tasks failed: RuntimeError: worker killed (1)")
    assert summary < out.index("figure:"), "the failures must come before the figures"
    res = json.loads((tmp_path / "R" / "results.json").read_text())
    assert len(res["failed_tasks"]) == 1 and res["n_tasks"] == 2
    assert "## Failed tasks" in (tmp_path / "R" / "report.md").read_text()


def test_a_run_too_large_for_memory_is_refused_before_it_starts(tmp_path):
    cfg = _config(tmp_path, n=100000)
    proc = subprocess.run([sys.executable, "-m", "ntkframe.runs.cli", "run", str(cfg), "--out", str(tmp_path / "R")],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs an estimated" in proc.stderr and "at N = 100000" in proc.stderr
    assert "the largest N that fits is about" in proc.stderr and "--force" in proc.stderr
    assert not (tmp_path / "R").exists()


def test_the_memory_check_names_the_largest_n_and_force_overrides_it(tmp_path, monkeypatch):
    import ntkframe.runs.driver as driver

    cfg = _config(tmp_path, n=64)
    need = WidthConvergence.memory_estimate(json.loads(json.dumps(_resolved(cfg))))
    monkeypatch.setattr(driver, "available_memory_bytes", lambda: need // 2)
    with pytest.raises(ConfigError, match=r"the largest N that fits is about (\d+)") as info:
        run_experiment(cfg, out=tmp_path / "R", progress=False, echo=quiet)
    import re

    largest = int(re.search(r"about (\d+)", str(info.value)).group(1))
    resolved = _resolved(cfg)
    from ntkframe.runs.rundir import with_n

    assert WidthConvergence.memory_estimate(with_n(resolved, largest)) <= need // 2
    assert WidthConvergence.memory_estimate(with_n(resolved, largest + 1)) > need // 2
    assert not (tmp_path / "R").exists()
    run_experiment(cfg, out=tmp_path / "R", progress=False, echo=quiet, force=True)
    assert (tmp_path / "R" / "results.json").exists()


def _resolved(cfg: Path) -> dict:
    from ntkframe.runs.config import load_toml
    from ntkframe.runs.driver import resolve_config

    return resolve_config(load_toml(cfg), str(cfg))[1]


# -- finding 4: an unguarded script with a process pool ----------------------------------------------

def _docs_kernel_example(guarded: bool) -> str:
    """The out-of-core example of docs/sweeps.md as a script (N = 3000 cut to 300), with or without its guard."""
    import re

    blocks = re.findall(r"^```python\n(.*?)^```", (Path(__file__).parents[1] / "docs" / "sweeps.md").read_text(),
                        flags=re.M | re.S)
    [code] = [b for b in blocks if "kernel_to_file" in b and 'executor="processes"' in b]
    assert 'if __name__ == "__main__":' in code, "the docs example lost its guard"
    code = code.replace("unit_sphere(3000,", "unit_sphere(300,").replace("X[:1000]", "X[:100]").replace(
        "K[:1000]", "K[:100]")
    if not guarded:
        code = re.sub(r'^if __name__ == "__main__":.*\n\s+main\(\)', "main()", code, flags=re.M)
        assert "__name__" not in code
    return code


def test_the_docs_example_without_its_guard_fails_with_a_clear_error_instead_of_hanging(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(_docs_kernel_example(guarded=False))
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the unguarded script hung (no error within 120 s)")
    assert proc.returncode != 0
    assert "ExecutorError" in proc.stderr and 'if __name__ == "__main__":' in proc.stderr
    assert "worker processes died while starting" in proc.stderr
    # with its guard, as the docs give it, the example runs
    script.write_text(_docs_kernel_example(guarded=True))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("True"), proc.stderr


def test_a_damaged_task_record_is_recomputed_and_said_so(tmp_path):
    cfg = _config(tmp_path)
    run = run_experiment(cfg, out=tmp_path / "R", progress=False, echo=quiet)
    before = json.loads((run / "results.json").read_text())
    victim = sorted((run / "tasks").glob("*.json"))[0]
    doc = json.loads(victim.read_text())
    doc["payload"]["result"]["rel_fro"][0] = 0.5  # an edited number: the checksum no longer matches
    victim.write_text(json.dumps(doc))
    lines: list[str] = []
    run_experiment(cfg, out=run, progress=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert any(f"task record {doc['key']!r}" in line and "recomputing it" in line for line in lines), lines
    after = json.loads((run / "results.json").read_text())
    assert after["points"] == before["points"]
