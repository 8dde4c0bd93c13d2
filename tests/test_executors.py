"""Process-pool workers never outlive the run that started them."""

from __future__ import annotations

import pickle
import subprocess
import sys


def test_a_worker_whose_owner_already_died_exits_instead_of_waiting(tmp_path):
    payload = tmp_path / "shared.pkl"
    payload.write_bytes(pickle.dumps({"x": 1}))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    code = ("from ntkframe.core.executors import _install_shared\n"
            f"_install_shared({str(payload)!r}, {dead})\n"
            "import time; time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1  # exited at once: its owner (pid `dead`) is not its parent any more


def test_a_worker_of_a_live_owner_loads_the_payload(tmp_path):
    payload = tmp_path / "shared.pkl"
    payload.write_bytes(pickle.dumps({"x": 41}))
    code = ("import os\nfrom ntkframe.core import executors\n"
            f"executors._install_shared({str(payload)!r}, os.getppid())\n"
            "print(executors._WORKER_SHARED['x'] + 1)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
