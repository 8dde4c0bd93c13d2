"""The one store for resumable results: fingerprints, refusal on mismatch, checksummed records, the lock."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ntkframe.core.store import LOCK_NAME, Lock, Store, array_digest, differences, digest
from ntkframe.errors import NotAStoreError, StoreLockedError, StoreMismatchError

FP = {"model": {"kind": "two_layer", "activation": "softplus", "m": 64}, "backend": {"name": "numpy", "dtype": "float64"}}


def test_reopening_with_the_same_fingerprint_resumes(tmp_path):
    s = Store(tmp_path / "r", FP, kind="sweep")
    assert not s.resumed
    s.put("task-1", {"value": 1.5})
    again = Store(tmp_path / "r", json.loads(json.dumps(FP)), kind="sweep")
    assert again.resumed and again.get("task-1") == {"value": 1.5}


def test_another_fingerprint_is_refused_naming_what_differs(tmp_path):
    Store(tmp_path / "r", FP, kind="sweep")
    other = {**FP, "model": {**FP["model"], "activation": "relu"}, "backend": {"name": "torch", "dtype": "float32"}}
    with pytest.raises(StoreMismatchError) as info:
        Store(tmp_path / "r", other, kind="sweep")
    text = str(info.value)
    assert "model.activation: 'softplus' → 'relu'" in text
    assert "backend.dtype: 'float64' → 'float32'" in text and "backend.name: 'numpy' → 'torch'" in text
    assert len(info.value.differences) == 3


def test_arrays_enter_the_fingerprint_by_content(tmp_path):
    X = np.random.default_rng(0).standard_normal((5, 3))
    Store(tmp_path / "k", {"X": X}, kind="kernel")
    Store(tmp_path / "k", {"X": X.copy()}, kind="kernel")  # same bytes: resumed
    Y = X.copy()
    Y[2, 1] += 1e-12
    with pytest.raises(StoreMismatchError, match="X: different array contents"):
        Store(tmp_path / "k", {"X": Y}, kind="kernel")
    assert array_digest(X) != array_digest(X.astype(np.float32))
    assert digest({"a": X}) == digest({"a": X.copy()})


def test_a_foreign_nonempty_folder_is_refused_and_an_empty_one_accepted(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.json").write_text("{}")
    with pytest.raises(NotAStoreError, match="not an ntkframe sweep folder"):
        Store(tmp_path / "mine", FP, kind="sweep")
    assert json.loads((tmp_path / "mine" / "results.json").read_text()) == {}
    (tmp_path / "empty").mkdir()
    Store(tmp_path / "empty", FP, kind="sweep")


def test_a_store_of_another_kind_is_refused(tmp_path):
    Store(tmp_path / "r", FP, kind="sweep")
    with pytest.raises(StoreMismatchError, match="'sweep' store"):
        Store(tmp_path / "r", FP, kind="checkpoint")


@pytest.mark.parametrize("damage", ["edit", "truncate", "rekey", "garbage"])
def test_a_damaged_record_is_never_returned(tmp_path, damage):
    s = Store(tmp_path / "r", FP, kind="sweep")
    s.put("t", {"slope": -0.5, "values": [1.0, 2.0]})
    path = next((tmp_path / "r" / "records").glob("*.json"))
    doc = json.loads(path.read_text())
    if damage == "edit":
        doc["payload"]["slope"] = -0.7
        path.write_text(json.dumps(doc))
    elif damage == "truncate":
        path.write_text(path.read_text()[:20])
    elif damage == "rekey":
        doc["key"] = "u"
        path.write_text(json.dumps(doc))
    else:
        path.write_bytes(b"\x00\xff" * 10)
    s2 = Store(tmp_path / "r", FP, kind="sweep")
    assert s2.get("t") is None and s2.corrupt == ["t"]


def test_keys_with_odd_characters_do_not_collide(tmp_path):
    s = Store(tmp_path / "r", FP, kind="sweep")
    s.put("m=64/seed=1", 1)
    s.put("m=64_seed=1", 2)
    assert s.get("m=64/seed=1") == 1 and s.get("m=64_seed=1") == 2
    assert sorted(s.keys()) == ["m=64/seed=1", "m=64_seed=1"]


def test_the_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    with Lock(tmp_path):
        with pytest.raises(StoreLockedError, match=r"in use by process \d+ on host"):
            Lock(tmp_path).acquire()
    Lock(tmp_path).acquire().release()  # released: free again
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "since": "x"}))
    lock = Lock(tmp_path).acquire()
    assert lock.stale["pid"] == dead and json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != dead
    lock.release()


def test_a_lock_from_another_host_is_not_guessed_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": "x"}))
    with pytest.raises(StoreLockedError, match="elsewhere.example"):
        Lock(tmp_path).acquire()


def test_differences_of_equal_fingerprints_is_empty():
    assert differences(FP, json.loads(json.dumps(FP))) == []
