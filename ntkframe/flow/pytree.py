"""Pytrees of backend arrays: leafwise maps, linear combinations and norms, with no host transfer.

A pytree here is an array, or a dict, list or tuple of pytrees (a model's parameters are a dict of
arrays).  Every operation is an array expression — no in-place update — so the same code runs on
NumPy, CuPy, torch and jax arrays, and the integrators (:mod:`ntkframe.flow.integrators`) advance a
parameter pytree without knowing its structure.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence


def tree_map(fn: Callable[..., Any], *trees: Any) -> Any:
    """Apply ``fn`` leafwise to pytrees of the same structure (dicts, lists, tuples of arrays)."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: tree_map(fn, *(t[key] for t in trees)) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(tree_map(fn, *items) for items in zip(*trees))
    return fn(*trees)


def tree_leaves(tree: Any) -> list[Any]:
    """The arrays of a pytree, depth first, dicts in their insertion order."""
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in tree_leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in tree_leaves(v)]
    return [tree]


def tree_combine(y: Any | None, h: float, coefs: Sequence[float], ks: Sequence[Any]) -> Any:
    """y + h Σ_i coefs[i]·ks[i] leafwise (zero coefficients skipped); ``y=None`` gives h Σ_i coefs[i]·ks[i]."""
    terms = [(c, k) for c, k in zip(coefs, ks) if c != 0.0]

    def leaf(*args: Any) -> Any:
        base, k_leaves = (args[0], args[1:]) if y is not None else (None, args)
        acc = None
        for (c, _), kl in zip(terms, k_leaves):
            acc = kl * c if acc is None else acc + kl * c
        if acc is None:
            return base
        return acc * h if base is None else base + acc * h

    return tree_map(leaf, *([] if y is None else [y]), *(k for _, k in terms))


def tree_sum_squares(tree: Any) -> Any:
    """Σ over all leaves of Σ x², as a 0-d array on the leaves' device (no host transfer)."""
    total = None
    for leaf in tree_leaves(tree):
        s = (leaf * leaf).sum()
        total = s if total is None else total + s
    return total


def tree_size(tree: Any) -> int:
    """The number of scalars in the pytree, Σ over leaves of their sizes."""
    return int(sum(math.prod(leaf.shape) for leaf in tree_leaves(tree)))
