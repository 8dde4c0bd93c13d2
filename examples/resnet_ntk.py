"""The empirical NTK of a small ResNet: ntkframe's structured per-layer path against autodiff, timed.

    H(x, x')[c, c'] = Σ_θ ∂f_c(x)/∂θ · ∂f_c'(x')/∂θ            (docs/theory.md §1)

The network is a plain ``torch.nn.Module`` (a convolutional stem, residual blocks with BatchNorm in
eval mode, a stride-2 block with a 1 × 1 convolution on the skip, global average pooling, a linear
head with k outputs).  ``nf.empirical_ntk`` computes its kernel three ways:

* ``implementation="structured"``: one batched forward pass records every layer's inputs, one
  batched backward pass its output cotangents, and each layer adds its own Gram (convolutions by
  per-sample layer gradients or position-pair sums, whichever costs less; the BatchNorm affine
  parameters by their own rule) — never the N × P Jacobian;
* ``"jacobian_contraction"``: torch.func's per-sample Jacobians vmap(jacrev), then J Jᵀ;
* ``"auto"``: whichever the cost model estimates cheapest (it says which).

Run:  python examples/resnet_ntk.py [--n 32] [--width 16] [--outputs 10] [--trace]
(about 10 s on 2 idle CPU cores at the defaults).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import ntkframe as nf


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity (or a strided 1 × 1 convolution), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (h + (x if self.skip is None else self.skip(x))).relu()


class SmallResNet(nn.Module):
    def __init__(self, width: int = 16, outputs: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(Block(width, width), Block(width, 2 * width, stride=2))
        self.head = nn.Linear(2 * width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x).relu()).mean((2, 3)))


def trained_statistics(net: nn.Module) -> nn.Module:
    """``net`` in eval mode, its BatchNorm running statistics made non-trivial (as after training)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def make_resnet(width: int = 16, outputs: int = 10) -> nn.Module:
    """The ResNet in eval mode, with :func:`trained_statistics`."""
    return trained_statistics(SmallResNet(width, outputs))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="number of 3 x 16 x 16 inputs N")
    ap.add_argument("--width", type=int, default=16, help="channels of the first stage")
    ap.add_argument("--outputs", type=int, default=10, help="outputs k")
    ap.add_argument("--trace", action="store_true", help="the trace kernel (N, N) instead of (N, N, k, k)")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = nf.TorchModel(make_resnet(args.width, args.outputs).double())
    be = nf.get_backend("torch", dtype="float64")
    params = model.init(be, seed=None)  # the module's own (already initialised) parameters
    X = torch.randn(args.n, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    print(f"SmallResNet(width={args.width}): P = {model.n_params(params):,} parameters, N = {args.n}, "
          f"k = {args.outputs}, {'trace' if args.trace else 'full'} kernel, {torch.get_num_threads()} threads")

    def ntk(impl: str) -> torch.Tensor:
        return nf.empirical_ntk(model, params, X, backend=be, implementation=impl, trace=args.trace)

    ntk("structured")  # warm-up: imports and torch.func's decompositions, outside the timings
    H_s, t_s = timed(lambda: ntk("structured"))
    H_a, t_a = timed(lambda: ntk("jacobian_contraction"))
    rel = float((H_s - H_a).abs().max() / H_a.abs().max())
    print(f"structured            {t_s:7.2f} s")
    print(f"jacobian_contraction  {t_a:7.2f} s   (vmap(jacrev) per-sample Jacobians, then J Jᵀ)")
    print(f"speed-up {t_a / t_s:.1f}x, max relative difference {rel:.1e}")

    from ntkframe.core import autodiff

    picked = []
    choose = autodiff.choose
    autodiff.choose = lambda *a, **k: picked.append(choose(*a, **k)) or picked[-1]
    try:
        _, t_auto = timed(lambda: ntk("auto"))
    finally:
        autodiff.choose = choose
    print(f"auto picked {picked[0]} ({t_auto:.2f} s)")
    H = nf.to_numpy(H_s)
    K = H if args.trace else np.einsum("ijcc->ij", H) / args.outputs
    eig = np.linalg.eigvalsh(K)
    print(f"trace kernel: eigenvalues from {eig[0]:.3g} to {eig[-1]:.3g}, condition number {eig[-1] / eig[0]:.3g}")


if __name__ == "__main__":
    main()
