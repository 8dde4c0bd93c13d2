"""Kernel regression with the infinite-width kernels H* (NTK) and NNGP on a real data set: handwritten digits.

scikit-learn ships the 8×8 digits (1797 images, no download).  ``nf.data.digits()`` centres them and
puts them on the unit sphere (the two-layer net has no 1/√d), with one-hot labels of zero mean.  For a
two-layer network f(x) = (1/√m) Σ_r a_r σ(w_rᵀx) the script predicts the test digits with

* kernel regression with H* — the infinitely wide network trained to convergence by gradient flow on
  the MSE, averaged over initialisations (docs/theory.md §3–4): mean H*(x, X)(H*(X, X) + εI)⁻¹Y;
* kernel regression with the NNGP kernel — the same network with only the output layer trained
  (the Bayesian posterior mean of a Gaussian process with the network's prior);
* the H* gradient flow stopped at finite times t (``nf.predict(..., t=t)``: early stopping).

Run:  python examples/digits_kernel_regression.py [--n-train 1000] [--activation relu] [--diag-reg 1e-4]
Needs scikit-learn (``pip install scikit-learn``); without it the script says so and exits cleanly.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import ntkframe as nf


def accuracy(pred: np.ndarray, target: np.ndarray, classes: tuple[int, ...]) -> float:
    """Fraction of test points whose largest output is their class."""
    return float(np.mean(np.asarray(classes)[np.argmax(pred, axis=1)] == target))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1000, help="training images (the rest, up to --n-test, are test)")
    ap.add_argument("--n-test", type=int, default=797, help="test images")
    ap.add_argument("--activation", default="relu", help="σ: relu and erf have closed forms; others use quadrature")
    ap.add_argument("--train", default="both", choices=("both", "hidden", "output"), help="layers in the NTK")
    ap.add_argument("--diag-reg", type=float, default=1e-4, help="ε = diag_reg · mean(diag K) added to the diagonal")
    ap.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    args = ap.parse_args(argv)

    try:
        ds = nf.data.digits(labels="onehot")
    except ImportError as exc:
        print(f"skipped: {exc}")
        return 0
    X, Y, target, classes = ds.X, ds.y, ds.info["target"], ds.info["classes"]
    if args.n_train + args.n_test > len(ds):
        ap.error(f"--n-train + --n-test = {args.n_train + args.n_test} exceeds the {len(ds)} images")
    order = np.random.default_rng(args.seed).permutation(len(ds))
    tr, te = order[:args.n_train], order[args.n_train:args.n_train + args.n_test]
    print(f"digits: {len(tr)} training and {len(te)} test images, d = {X.shape[1]}, {len(classes)} classes; "
          f"σ = {args.activation}, train = {args.train}, diag_reg = {args.diag_reg:g}")

    model = nf.TwoLayerNet(d=X.shape[1], m=1, activation=args.activation, train=args.train)  # m: unused by H*
    rows = []
    for kernel, fn in (("H* (NTK)", nf.analytic_ntk), ("NNGP", nf.nngp_kernel)):
        start = time.perf_counter()
        K_tt = fn(model, X[tr])                   # K(X, X) on the training images
        K_st = fn(model, X[te], X[tr])            # K(x, X) for the test images
        k_ss = fn(model, X[te], diagonal=True)    # k(x, x): for the posterior variance
        post = nf.predict.kernel_regression(K_tt, K_st, Y[tr], args.diag_reg, k_test_test=k_ss)
        seconds = time.perf_counter() - start
        rows.append((f"kernel regression, {kernel}", accuracy(post.mean, target[te], classes),
                     float(np.mean((post.mean - Y[te]) ** 2)), float(np.mean(post.variance)), seconds))
        if fn is nf.analytic_ntk:
            # the same H*, gradient flow from f ≡ 0 stopped at times t (one eigendecomposition for all t)
            start = time.perf_counter()
            times = np.array([10.0, 100.0, 1000.0, 10000.0])
            _, F = nf.predict.gradient_descent_mse(K_tt, Y[tr], args.diag_reg)(times, 0.0, None, K_st)
            seconds = (time.perf_counter() - start) / len(times)
            for t, f in zip(times, F):
                rows.append((f"H* gradient flow at t = {t:g}", accuracy(f, target[te], classes),
                             float(np.mean((f - Y[te]) ** 2)), None, seconds))

    print(f"\n{'predictor':38s} {'test accuracy':>13s} {'test MSE':>10s} {'mean var':>9s} {'seconds':>8s}")
    for name, acc, mse, var, sec in rows:
        v = f"{var:9.3g}" if var is not None else f"{'—':>9s}"
        print(f"{name:38s} {acc:13.3f} {mse:10.4g} {v} {sec:8.2f}")
    print("\n(t is gradient-flow time of the mean loss (1/N) Σ ½‖f − y‖²; 'mean var' is the GP posterior variance "
          "of one output, averaged over the test images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
