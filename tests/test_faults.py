"""Fault injection: kernel-file writers and simulate checkpoints killed, corrupted, edited and rerun.

A writer is SIGKILLed (its whole process group: the parent and any worker processes) after a delay
drawn from a fixed-seed generator, once it has recorded at least one tile / checkpoint; the resumed
result must equal an uninterrupted one bit for bit.  Damaged tiles, records and checkpoints must be
detected (never used), and reruns with changed inputs refused.  Sweeps killed mid-run are tested in
tests/test_sweep.py and tests/test_run_folders.py.  Bounded: the whole module runs in well under 2 min.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import ntkframe as nf
import ntkframe.core.outofcore as oc
from ntkframe.errors import IncompleteResultError, StoreMismatchError

RNG = np.random.default_rng(20261130)  # the kill delays: random, but the same on every run
N, D, M, B = 150, 4, 24, 6  # 25 x 25 tiles, 325 of them symmetric: long enough to be killed mid-way


def sphere(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, D))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


PROBLEM = f"""
import numpy as np, ntkframe as nf
X = np.random.default_rng(0).standard_normal(({N}, {D})); X /= np.linalg.norm(X, axis=1, keepdims=True)
model = nf.TwoLayerNet(d={D}, m={M}, activation="softplus")
params = model.init("numpy", seed=3)
"""


def problem():
    ns: dict = {}
    exec(PROBLEM, ns)  # the very same arrays the killed subprocess computes with
    return ns["model"], ns["params"], ns["X"]


def run_and_kill(script: str, started, tmp_path: Path, budget: float = 60.0) -> None:
    """Run ``script`` in a new process group; once ``started()`` is true wait a random delay, SIGKILL the group."""
    path = tmp_path / "victim.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.Popen([sys.executable, str(path)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + budget
        while not started():
            if proc.poll() is not None:
                pytest.fail(f"the victim ended (rc={proc.returncode}) before it started: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("the victim did not start writing in time")
            time.sleep(0.01)
        time.sleep(float(RNG.uniform(0.05, 0.4)))
        assert proc.poll() is None, "the victim finished before it could be killed: make the problem larger"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        proc.stderr.close()


def records(side: Path) -> int:
    folder = side / "tiles"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


# -- kernel files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("executor,fmt", [("serial", "npy"), ("processes", "npy"), ("serial", "zarr")])
def test_a_killed_kernel_writer_resumes_to_the_uninterrupted_file_bit_for_bit(executor, fmt, tmp_path):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    model, params, X = problem()
    ref = np.asarray(nf.kernel_to_file(model, params, X, out=tmp_path / f"ref.{fmt}", block_size=B,
                                       executor=executor, workers=2, progress=False)[:])
    out = tmp_path / f"K.{fmt}"
    side = tmp_path / f"K.{fmt}.ntkframe"
    run_and_kill(PROBLEM + f"""
if __name__ == "__main__":
    import ntkframe.core.outofcore as oc, time
    real = oc._tile
    def slow(*a):  # a little slower, so the kill lands mid-way (serial: workers would not find it)
        time.sleep(0.002)
        return real(*a)
    if {executor!r} == "serial":
        oc._tile = slow
    nf.kernel_to_file(model, params, X, out={str(out)!r}, block_size={B}, executor={executor!r}, workers=2,
                      progress=False)
""", lambda: records(side) > 0, tmp_path)
    total = (N // B) * (N // B + 1) // 2
    assert 0 < records(side) < total
    with pytest.raises(IncompleteResultError, match="missing tiles"):
        nf.open_kernel(out)
    before, calls = records(side), []
    real = oc._tile
    if executor == "serial":
        oc._tile = lambda *a: (calls.append(a[1:3]), real(*a))[1]
    try:
        F = nf.kernel_to_file(model, params, X, out=out, block_size=B, executor=executor, workers=2,
                              resume=True, progress=False)
    finally:
        oc._tile = real
    if executor == "serial":
        assert len(calls) == total - before  # exactly the tiles without a record
    np.testing.assert_array_equal(np.asarray(F[:]), ref)
    np.testing.assert_array_equal(np.asarray(nf.open_kernel(out)[:]), ref)


@pytest.fixture
def small_kernel(tmp_path):
    model = nf.TwoLayerNet(d=D, m=16)
    params = model.init("numpy", seed=1)
    X = sphere(40, 2)

    def write(fmt: str, **kw):
        return nf.kernel_to_file(model, params, X, out=tmp_path / f"K.{fmt}", block_size=10, progress=False, **kw)

    return write, tmp_path


def _tile_calls(monkeypatch):
    calls, real = [], oc._tile
    monkeypatch.setattr(oc, "_tile", lambda *a: (calls.append(tuple(a[1:3])), real(*a))[1])
    return calls


def test_a_flipped_byte_in_a_tile_is_named_and_only_that_tile_recomputed(small_kernel, monkeypatch):
    write, folder = small_kernel
    ref = np.array(write("npy"))
    out = folder / "K.npy"
    A = np.load(out, mmap_mode="r+")
    A[25, 13] = np.nextafter(A[25, 13], np.inf)  # one ulp in tile (2, 1), i.e. the mirror of (1, 2)
    A.flush()
    del A
    with pytest.raises(IncompleteResultError, match=r"1 corrupt tile \(\(1, 2\)\)"):
        nf.open_kernel(out)
    assert nf.open_kernel(out, verify=False)[25, 13] != ref[25, 13]  # verify=False trusts the records
    calls = _tile_calls(monkeypatch)
    F = write("npy", resume=True)
    assert calls == [(1, 2)]
    np.testing.assert_array_equal(np.asarray(F), ref)


def test_a_truncated_npy_file_is_refused_then_recomputed(small_kernel):
    write, folder = small_kernel
    ref = np.array(write("npy"))
    out = folder / "K.npy"
    with open(out, "r+b") as fh:
        fh.truncate(out.stat().st_size // 2)
    with pytest.raises(IncompleteResultError, match="cannot be read as the 40 x 40 kernel"):
        nf.open_kernel(out)
    M = nf.open_kernel(out, allow_incomplete=True)
    assert M.mask.all()
    np.testing.assert_array_equal(np.asarray(write("npy", resume=True)), ref)


def test_a_deleted_zarr_chunk_is_detected_and_recomputed(small_kernel, monkeypatch):
    pytest.importorskip("zarr")
    write, folder = small_kernel
    ref = np.asarray(write("zarr")[:])
    chunks = [p for p in (folder / "K.zarr").rglob("*") if p.is_file() and not p.name.startswith((".", "zarr"))]
    victim = next(p for p in chunks if p.name == "3" and p.parent.name == "0")  # chunk (0, 3): tile (0, 3)
    victim.unlink()
    with pytest.raises(IncompleteResultError, match=r"1 corrupt tile \(\(0, 3\)\)"):
        nf.open_kernel(folder / "K.zarr")
    calls = _tile_calls(monkeypatch)
    np.testing.assert_array_equal(np.asarray(write("zarr", resume=True)[:]), ref)
    assert calls == [(0, 3)]


@pytest.mark.parametrize("edit", ["checksum", "place", "torn", "deleted"])
def test_an_edited_or_lost_tile_record_is_never_trusted(edit, small_kernel, monkeypatch):
    write, folder = small_kernel
    ref = np.array(write("npy"))
    rec = folder / "K.npy.ntkframe" / "tiles" / "tile-2-3.json"
    doc = json.loads(rec.read_text())
    if edit == "checksum":  # a record edited by hand: its own checksum fails
        doc["payload"]["crc32"] += 1
        rec.write_text(json.dumps(doc))
    elif edit == "place":  # a consistent record for the wrong place
        doc["payload"]["rows"] = [0, 10]
        from ntkframe.core.store import record_checksum

        doc["sha256"] = record_checksum(doc["payload"])
        rec.write_text(json.dumps(doc))
    elif edit == "torn":
        rec.write_text(rec.read_text()[:20])
    else:
        rec.unlink()
    kind = "missing" if edit == "deleted" else "corrupt"
    for verify in (True, False):  # the records are checked even without reading the tiles
        with pytest.raises(IncompleteResultError, match=rf"1 {kind} tile \(\(2, 3\)\)"):
            nf.open_kernel(folder / "K.npy", verify=verify)
    calls = _tile_calls(monkeypatch)
    np.testing.assert_array_equal(np.asarray(write("npy", resume=True)), ref)
    assert calls == [(2, 3)]


# -- simulate checkpoints ----------------------------------------------------------------------------

FLOW = f"""
import numpy as np, ntkframe as nf
X = np.random.default_rng(5).standard_normal((10, 3)); X /= np.linalg.norm(X, axis=1, keepdims=True)
y = np.sin(2 * X[:, 0])
model = nf.TwoLayerNet(d=3, m=32)
TIMES = [0.01 * k for k in range(400)]
KW = dict(record=["outputs", "param_drift"], progress=False)
"""


def flow():
    ns: dict = {}
    exec(FLOW, ns)
    return ns


@pytest.mark.parametrize("integrator", ["nf.Euler(h=0.002)", "nf.DormandPrince(rtol=1e-7, atol=1e-10)"])
def test_a_killed_simulate_resumes_to_the_uninterrupted_trajectory_bit_for_bit(integrator, tmp_path):
    ns = flow()
    make = eval(integrator, {"nf": nf})
    whole = nf.simulate(ns["model"], nf.MSE(), make, ns["X"], ns["y"], ns["TIMES"], **ns["KW"])
    ck = tmp_path / "ck"
    progress = ck / "progress.json"
    run_and_kill(FLOW + f"""
nf.simulate(model, nf.MSE(), {integrator}, X, y, TIMES, checkpoint={str(ck)!r}, **KW)
""", progress.exists, tmp_path)
    index = json.loads(progress.read_text())["index"]
    assert 0 <= index < len(ns["TIMES"]) - 1  # killed mid-way
    resumed = nf.simulate(ns["model"], nf.MSE(), make, ns["X"], ns["y"], ns["TIMES"], resume=ck, **ns["KW"])
    assert sorted(resumed.arrays) == sorted(whole.arrays)
    for key in whole.arrays:
        np.testing.assert_array_equal(resumed.arrays[key], whole.arrays[key], err_msg=key)
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key], err_msg=key)


@pytest.fixture
def checkpoint(tmp_path):
    ns = flow()
    ck = tmp_path / "ck"
    nf.simulate(ns["model"], nf.MSE(), nf.RK4(h=0.05), ns["X"], ns["y"], [0.0, 0.5, 1.0], checkpoint=ck,
                **ns["KW"])

    def resume(**kw):
        args = dict(loss=nf.MSE(), integrator=nf.RK4(h=0.05), X=ns["X"], y=ns["y"], times=[0.0, 0.5, 1.0, 2.0],
                    resume=ck, **ns["KW"])
        args.update(kw)
        return nf.simulate(ns["model"], **args)

    return ck, resume


@pytest.mark.parametrize("damage", ["edit-progress", "torn-progress", "flip-state", "truncate-state", "lost-state"])
def test_a_damaged_checkpoint_is_reported_never_used(damage, checkpoint):
    ck, resume = checkpoint
    progress = ck / "progress.json"
    state = next(ck.glob("state-*.npz"))
    if damage == "edit-progress":
        doc = json.loads(progress.read_text())
        doc["t"] = 0.25
        progress.write_text(json.dumps(doc))
    elif damage == "torn-progress":
        progress.write_text(progress.read_text()[:40])
    elif damage == "flip-state":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x01
        state.write_bytes(bytes(data))
    elif damage == "truncate-state":
        state.write_bytes(state.read_bytes()[:100])
    else:
        state.unlink()
    with pytest.raises(IncompleteResultError, match="damaged|missing") as info:
        resume()
    assert "not used" in str(info.value)


@pytest.mark.parametrize("change,difference", [
    (dict(integrator=nf.Euler(h=0.05)), r"integrator\.kind: 'rk4' → 'euler'"),
    (dict(backend=nf.get_backend("numpy", dtype="float32")), r"dtype: 'float64' → 'float32'"),
    (dict(record=["outputs"]), r"record: "),
    (dict(seed=7), r"params0\.W: different array contents"),
])
def test_resuming_with_changed_inputs_is_refused_listing_them(change, difference, checkpoint):
    ck, resume = checkpoint
    with pytest.raises(StoreMismatchError, match=difference):
        resume(**change)


def test_a_live_simulate_holds_its_checkpoint_lock(checkpoint):
    ck, resume = checkpoint
    from ntkframe.core.store import Lock

    with Lock(ck):
        with pytest.raises(nf.errors.StoreLockedError, match=f"in use by process {os.getpid()}"):
            resume()
    assert resume().times.tolist() == [0.0, 0.5, 1.0, 2.0]
