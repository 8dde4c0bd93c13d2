"""Data sets for the experiments: synthetic sets on the unit sphere, files, and scikit-learn's digits.

The seed's two-layer network has no 1/√d on its first layer, so inputs belong on the unit sphere
(‖x‖ = 1; docs/theory.md §3): every generator here returns unit-norm inputs unless told otherwise.
Everything is seeded with ``numpy.random.default_rng(seed)`` and returned as float64 NumPy arrays
in a :class:`Dataset` (which unpacks as ``X, y = dataset``).

=================  ==========================================================================
name               what
=================  ==========================================================================
``teacher``        unit-sphere inputs, labels from a random two-layer teacher network
``random``         unit-sphere inputs, i.i.d. random labels (gaussian or ±1)
``regression_1d``  t ∈ [0, 2π) embedded on the circle x = (cos t, sin t, 0, …), y = g(t)
``two_spirals``    two interleaved 2-D spirals, lifted to (p, c)/‖(p, c)‖ on the sphere, y = ±1
``digits``         scikit-learn's 8×8 digits (optional extra), centred and normalised
``file``           X and y from .npy / .npz / .csv files (:func:`load`)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class Dataset:
    """Inputs ``X`` (n, d), labels ``y`` (n,) or (n, k), a ``name`` and extra ``info`` (e.g. the 1-D
    coordinate ``t`` of ``regression_1d``).  Unpacks as ``X, y = dataset``."""

    X: np.ndarray
    y: np.ndarray
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.X, self.y))

    def __len__(self) -> int:
        return int(self.X.shape[0])


def _count(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def normalize_rows(X: Any) -> np.ndarray:
    """X with every row scaled to unit norm; a zero row is an error (it has no direction)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = np.flatnonzero(norms[:, 0] == 0)[:5].tolist()
        raise ValueError(f"cannot normalise rows {bad} to the unit sphere: they are zero")
    return X / norms


def unit_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n points uniform on the unit sphere S^{d−1} ⊂ R^d: Gaussian rows, normalised (float64, (n, d))."""
    n, d = _count(n, "n (number of points)"), _count(d, "d (dimension)")
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def teacher_labels(X: Any, *, seed: int = 0, width: int = 16, activation: str = "tanh", outputs: int = 1,
                   noise: float = 0.0) -> np.ndarray:
    """y = f_teacher(X) (+ noise·N(0, 1)) for a random TwoLayerNet teacher (width, activation, seeded).

    The teacher is ``nf.TwoLayerNet(d, width, activation, outputs=outputs).init(seed=seed)`` — the same
    network family as the student, so the task is realisable.
    """
    from ..core.backend import get_backend
    from ..core.models import TwoLayerNet

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n, d); got shape {X.shape}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    be = get_backend("numpy")
    teacher = TwoLayerNet(X.shape[1], _count(width, "width"), activation, outputs=_count(outputs, "outputs"))
    y = np.asarray(teacher.apply(teacher.init(be, seed=seed), X, backend=be), dtype=np.float64)
    if noise:
        y = y + noise * np.random.default_rng([seed, 1]).standard_normal(y.shape)
    return y


LABEL_KINDS = ("gaussian", "sign")


def random_labels(n: int, *, seed: int = 0, kind: str = "gaussian", outputs: int = 1) -> np.ndarray:
    """i.i.d. labels: N(0, 1) (``kind="gaussian"``) or uniform ±1 (``"sign"``); (n,) or (n, outputs)."""
    n, k = _count(n, "n"), _count(outputs, "outputs")
    rng = np.random.default_rng([seed, 2])
    shape = (n,) if k == 1 else (n, k)
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "sign":
        return rng.choice(np.array([-1.0, 1.0]), size=shape)
    raise ValueError(f"unknown label kind {kind!r}; allowed: {', '.join(LABEL_KINDS)}")


def _embed(P: np.ndarray, d: int, what: str) -> np.ndarray:
    if d < P.shape[1]:
        raise ValueError(f"{what} needs d >= {P.shape[1]}; got d={d}")
    return np.concatenate([P, np.zeros((P.shape[0], d - P.shape[1]))], axis=1)


def regression_1d(n: int, d: int = 2, seed: int = 0, *, target: Callable[[np.ndarray], np.ndarray] | None = None,
                  noise: float = 0.0, grid: bool = False) -> Dataset:
    """A 1-D regression problem on the circle: t ∈ [0, 2π), x = (cos t, sin t, 0, …, 0) ∈ R^d, ‖x‖ = 1.

    y = target(t) (default sin(3t) + cos(t)/2) + noise·N(0, 1).  ``grid=True`` spaces t evenly
    instead of drawing it uniformly.  ``info["t"]`` holds the angles (sorted), for plotting.
    """
    n, d = _count(n, "n"), _count(d, "d", 2)
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False) if grid else np.sort(rng.uniform(0.0, 2 * math.pi, n))
    fn = target or (lambda s: np.sin(3 * s) + 0.5 * np.cos(s))
    y = np.asarray(fn(t), dtype=np.float64)
    if y.shape[0] != n:
        raise ValueError(f"target(t) must return one value per angle ({n}); got shape {y.shape}")
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    X = _embed(np.stack([np.cos(t), np.sin(t)], axis=1), d, "regression_1d")
    return Dataset(X, y, "regression_1d", {"t": t})


def lifted_circle(t: np.ndarray, d: int, lift: float) -> np.ndarray:
    """x = (cos t, sin t, ℓ)/√(1 + ℓ²) padded with zeros to R^d (ℓ = 0: (cos t, sin t, 0, …)); ‖x‖ = 1.

    The constant coordinate ℓ acts as a bias: without it the NTK of a bias-free two-layer network
    with softplus or relu has zero eigenvalues on every odd frequency ≥ 3 of the angle.
    """
    cols = [np.cos(t), np.sin(t)] + ([np.full_like(t, lift)] if lift else [])
    P = np.stack(cols, axis=1) / math.sqrt(1.0 + lift * lift)
    return np.concatenate([P, np.zeros((t.size, d - P.shape[1]))], axis=1)


def two_spirals(n: int, d: int = 3, seed: int = 0, *, turns: float = 1.5, noise: float = 0.0, lift: float = 1.0,
                normalize: bool = True) -> Dataset:
    """Two interleaved spirals with labels ±1, n points in all (the first ⌈n/2⌉ labelled +1).

    Arm points p = r(cos φ, sin φ), r = φ/(2π·turns) ∈ (0, 1], the second arm rotated by π, plus
    noise·N(0, 1) in the plane.  ``normalize=True`` lifts each p to (p, lift)/‖(p, lift)‖ — one-to-one,
    so the spirals stay apart — on the unit sphere of R^3, padded with zeros to R^d (d ≥ 3);
    ``normalize=False`` returns the raw plane points (d ≥ 2).
    """
    n = _count(n, "n", 2)
    if not (lift > 0 and math.isfinite(lift)):
        raise ValueError(f"lift must be a finite number > 0; got {lift!r}")
    rng = np.random.default_rng(seed)
    n_pos = (n + 1) // 2
    phi = rng.uniform(0.25, 2 * math.pi * turns, n)
    r = phi / (2 * math.pi * turns)
    phi = phi + np.where(np.arange(n) < n_pos, 0.0, math.pi)
    P = r[:, None] * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    if noise:
        P = P + noise * rng.standard_normal(P.shape)
    y = np.where(np.arange(n) < n_pos, 1.0, -1.0)
    if normalize:
        X = _embed(normalize_rows(np.concatenate([P, np.full((n, 1), float(lift))], axis=1)), d,
                   "two_spirals with normalize=True (a lifted 3-D embedding)")
    else:
        X = _embed(P, d, "two_spirals")
    return Dataset(X, y, "two_spirals", {"plane": P})


def _read(path: Path, what: str) -> np.ndarray | dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix in (".csv", ".txt", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with open(path) as fh:
            first = fh.readline()
        try:
            [float(v) for v in first.strip().split(delimiter) if v.strip()]
            skip = 0
        except ValueError:  # a header row
            skip = 1
        return np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2)
    raise ValueError(f"cannot read {what} file {str(path)!r}: unknown extension {suffix!r}; "
                     "allowed: .npy, .npz (arrays 'X' and 'y'), .csv/.txt/.tsv")


def load(path: str | Path, y_path: str | Path | None = None, *, label_column: int | None = -1,
         normalize: bool = False) -> Dataset:
    """Inputs and labels from files (never unpickled).

    * ``.npz`` with arrays ``X`` and ``y``;
    * ``.npy`` with X, and ``y_path`` (``.npy`` or ``.csv``) with y;
    * ``.csv`` (a header row is skipped): with ``y_path``, X is the whole table; without, column
      ``label_column`` (default the last) is y and the rest is X.

    ``normalize=True`` puts the inputs on the unit sphere (the two-layer net's expectation).
    """
    path = Path(path)
    data = _read(path, "input")
    if isinstance(data, dict):
        missing = [k for k in ("X", "y") if k not in data]
        if missing:
            raise KeyError(f"{str(path)!r} lacks arrays {missing}; an .npz needs 'X' and 'y' (has {sorted(data)})")
        X, y = data["X"], data["y"]
    elif y_path is not None:
        X = data
        yd = _read(Path(y_path), "label")
        if isinstance(yd, dict):
            raise ValueError(f"labels file {str(y_path)!r} is an .npz; pass it as the first argument instead")
        y = yd[:, 0] if (yd.ndim == 2 and yd.shape[1] == 1) else yd
    else:
        if data.ndim != 2 or label_column is None:
            raise ValueError(f"{str(path)!r} holds only inputs (shape {data.shape}); give the labels with y_path=, "
                             "or use a .csv with a label column or an .npz with 'X' and 'y'")
        if not -data.shape[1] <= label_column < data.shape[1] or data.shape[1] < 2:
            raise ValueError(f"label_column={label_column} is out of range for a table with {data.shape[1]} columns")
        col = label_column % data.shape[1]
        y = data[:, col]
        X = np.delete(data, col, axis=1)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or y.ndim not in (1, 2) or X.shape[0] != y.shape[0]:
        raise ValueError(f"inputs and labels do not match: X has shape {X.shape}, y has shape {y.shape} "
                         "(expected (n, d) and (n,) or (n, k))")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"{str(path)!r}: inputs or labels contain NaN or infinite values")
    return Dataset(normalize_rows(X) if normalize else X, y, path.stem, {"path": str(path)})


DIGIT_LABELS = ("onehot", "int", "sign")


def digits(n: int | None = None, seed: int = 0, *, classes: tuple[int, ...] | None = None, labels: str = "onehot",
           center: bool = True) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 × 64, shipped with the package: no download).

    Inputs are centred (the mean image subtracted, ``center=True``) and normalised to the unit
    sphere.  ``classes`` keeps only those digits; ``n`` draws a random subset (seeded).  Labels:
    ``"onehot"`` (n, C) with entries 1 − 1/C and −1/C (zero mean, as in neural-tangents' examples),
    ``"int"`` (the digit), or ``"sign"`` (±1; needs exactly two classes, the first → +1).
    Needs the optional dependency scikit-learn (``pip install scikit-learn``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data set needs scikit-learn, which is not installed: "
                          "pip install scikit-learn") from exc
    if labels not in DIGIT_LABELS:
        raise ValueError(f"unknown labels {labels!r}; allowed: {', '.join(DIGIT_LABELS)}")
    raw = load_digits()
    X, target = np.asarray(raw.data, dtype=np.float64), np.asarray(raw.target)
    classes = tuple(sorted(set(int(c) for c in target))) if classes is None else tuple(int(c) for c in classes)
    bad = [c for c in classes if c not in range(10)]
    if bad or not classes:
        raise ValueError(f"classes must be digits 0..9; got {classes!r}")
    keep = np.isin(target, classes)
    X, target = X[keep], target[keep]
    if n is not None:
        n = _count(n, "n")
        if n > X.shape[0]:
            raise ValueError(f"n={n} exceeds the {X.shape[0]} digits available for classes {classes}")
        idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], n, replace=False))
        X, target = X[idx], target[idx]
    if center:
        X = X - X.mean(axis=0)
    X = normalize_rows(X)
    if labels == "int":
        y = target.astype(np.float64)
    elif labels == "sign":
        if len(classes) != 2:
            raise ValueError(f"labels='sign' needs exactly two classes; got {classes}")
        y = np.where(target == classes[0], 1.0, -1.0)
    else:
        C = len(classes)
        y = (target[:, None] == np.array(classes)[None, :]).astype(np.float64) - 1.0 / C
    return Dataset(X, y, "digits", {"classes": classes, "target": target})


# -------------------------------------------------------------------------------------------------
def _teacher(n: int, d: int, seed: int, **kw: Any) -> Dataset:
    X = unit_sphere(n, d, seed)
    return Dataset(X, teacher_labels(X, seed=seed + 1, **kw), "teacher", {})


def _random(n: int, d: int, seed: int, **kw: Any) -> Dataset:
    return Dataset(unit_sphere(n, d, seed), random_labels(n, seed=seed, **kw), "random", {})


def _file(n: int | None, d: int | None, seed: int, **kw: Any) -> Dataset:
    if "path" not in kw:
        raise ValueError("data set 'file' needs path= (and optionally y_path=, label_column=, normalize=)")
    ds = load(kw.pop("path"), **kw)
    if d is not None and ds.X.shape[1] != d:
        raise ValueError(f"{ds.info['path']!r} has d={ds.X.shape[1]} features but d={d} was asked for")
    if n is not None and n < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
        ds = Dataset(ds.X[idx], ds.y[idx], ds.name, ds.info)
    return ds


def _digits(n: int | None, d: int | None, seed: int, **kw: Any) -> Dataset:
    if d is not None and d != 64:
        raise ValueError(f"the digits data set has d=64 features; got d={d}")
    return digits(n, seed, **kw)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "teacher": _teacher,
    "random": _random,
    "regression_1d": lambda n, d, seed, **kw: regression_1d(n, 2 if d is None else d, seed, **kw),
    "two_spirals": lambda n, d, seed, **kw: two_spirals(n, 3 if d is None else d, seed, **kw),
    "digits": _digits,
    "file": _file,
}


def make_dataset(name: str, n: int | None = None, d: int | None = None, seed: int = 0, **kw: Any) -> Dataset:
    """Build the data set ``name`` (module docstring lists them) with n points in R^d from ``seed``.

    Extra keywords go to the generator (``teacher``: width, activation, outputs, noise; ``random``:
    kind, outputs; ``regression_1d``: target, noise, grid; ``two_spirals``: turns, noise, lift,
    normalize; ``digits``: classes, labels, center; ``file``: path, y_path, label_column, normalize).
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if key in ("teacher", "random"):
        if n is None or d is None:
            raise ValueError(f"data set {key!r} needs n and d")
    elif key in ("regression_1d", "two_spirals") and n is None:
        raise ValueError(f"data set {key!r} needs n")
    try:
        return DATASETS[key](n, d, seed, **kw)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"data set {key!r}: {exc}") from None
        raise


__all__ = ["Dataset", "DATASETS", "make_dataset", "unit_sphere", "teacher_labels", "random_labels", "regression_1d",
           "two_spirals", "load", "digits", "normalize_rows"]
