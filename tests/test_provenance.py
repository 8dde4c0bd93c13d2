"""Provenance says where a result came from: versions, host, CPU, threads, and ntkframe's own commit only."""

from __future__ import annotations

import subprocess

import pytest

import ntkframe as nf
from ntkframe.core import provenance as prov


def test_provenance_names_host_cpu_matplotlib_threads_and_the_backend_blas():
    p = prov.provenance(nf.get_backend("numpy"))
    assert p["host"] and p["cpu_model"] and p["cpus"] >= 1
    assert "matplotlib" in p["versions"] and p["versions"]["ntkframe"] == nf.__version__
    assert "cpu_threads" in p["threads"]
    assert p["backend"] == {"name": "numpy", "device": "cpu", "dtype": "float64"}
    assert "path" in p["blas"] or "name" in p["blas"]


def test_provenance_records_the_huge_page_mode_and_the_memory_variables(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    mem = prov.provenance()["memory"]
    assert mem["env"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and "THP_MEM_ALLOC_ENABLE" not in mem["env"]
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        assert mem["transparent_hugepage"] is None
    else:  # the bracketed mode, e.g. "always [madvise] never" -> "madvise"
        assert f"[{mem['transparent_hugepage']}]" in text


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def user_repo(tmp_path):
    """A user's own repository with ntkframe installed (non-editable) in a folder inside it."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "analysis.py").write_text("print(1)\n")
    _git(tmp_path, "add", "analysis.py")
    _git(tmp_path, "commit", "-q", "-m", "user work")
    site = tmp_path / ".venv" / "site-packages"
    (site / "ntkframe").mkdir(parents=True)
    (site / "ntkframe" / "__init__.py").write_text("")
    return tmp_path, site


def test_an_install_inside_a_users_repository_records_no_commit(user_repo):
    repo, site = user_repo
    assert prov._git_commit(site) is None       # not the user's commit
    assert prov._git_commit(repo) is None       # the user's repository is not an ntkframe checkout


def test_an_ntkframe_checkout_records_its_commit(user_repo):
    repo, _ = user_repo
    (repo / "pyproject.toml").write_text('[project]\nname = "ntkframe"\n')
    (repo / "ntkframe").mkdir()
    (repo / "ntkframe" / "__init__.py").write_text("")
    _git(repo, "add", "pyproject.toml", "ntkframe/__init__.py")
    _git(repo, "commit", "-q", "-m", "ntkframe")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert prov._git_commit(repo) == head


@pytest.mark.parametrize("code,env,expected", [
    ("import ntkframe", {}, "20"),                      # ntkframe first: OpenBLAS's spin shortened
    ("import numpy, ntkframe", {}, None),               # NumPy first: too late, nothing is set
    ("import ntkframe", {"OPENBLAS_THREAD_TIMEOUT": "7"}, "7"),  # a value already set is kept
])
def test_openblas_thread_timeout_is_set_only_before_numpy_and_never_overridden(code, env, expected):
    import os
    import sys

    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                         env={**base, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(expected)
