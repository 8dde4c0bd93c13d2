"""Structured empirical NTK of any torch ``nn.Module``: per-layer Jacobian-Gram rules, no N × P Jacobian.

    H(X1, X2)[i, j, c, c'] = Σ_θ ∂f_c(x1_i)/∂θ · ∂f_c'(x2_j)/∂θ

is a sum over parameter tensors, and a layer's parameters enter f only through the layer's output,
so each layer's share needs just what the layer saw (its inputs A, one batched forward pass with
forward hooks) and what f's outputs say about the layer's output (the cotangents G = ∂f_c/∂y, one
batched backward pass over the k outputs) — the way ntkframe's two-layer path avoids the Jacobian.

Rules (a layer called several times — shared weights — contributes the sum over its calls, cross
terms between calls included: its calls' positions are concatenated, or their per-sample gradients
summed):

``Linear`` (inputs (N, ..., in): T = the positions between the batch and the feature axis)
    the bias is a column of ones appended to A, so weight and bias are one block.  Two paths:
    *pair*: H_ij = Σ_{t,s} (A_it · A_js)(G_cit · G_c'js) — for T = 1 the classic (A Aᵀ) ⊙ (G Gᵀ);
    *jac*: the per-sample gradients J_i = Σ_t G_it ⊗ A_it (N × k × P_layer, one batched GEMM),
    then one Gram J1 J2ᵀ.
``Conv1d`` / ``Conv2d`` (any stride, padding — including 'same' and non-zero padding modes —,
    dilation, groups, bias or not): the input is unfolded into patches (N, L, C_in/g · kh · kw) per
    group, so a convolution is a Linear on L positions, with the same two paths.
``LayerNorm`` / ``GroupNorm`` / ``BatchNorm*d`` in eval mode (affine weight and bias)
    per-sample gradients Σ_positions G ⊙ x̂ and Σ_positions G, with x̂ the normalised input
    (recomputed from the recorded input and, for batch norm, the running statistics): k · P_layer
    numbers per sample, always the jac path.
``Embedding`` (no max_norm / scale_grad_by_freq)
    *pair*: Σ_{t,s} [idx_it = idx_js] (G_cit · G_c'js); *jac*: per-sample gradients scattered into
    (V, D) (padding_idx rows get no gradient).

Choosing the path (the rule of Novak et al., "Fast Finite Width Neural Tangent Kernel", ICML 2022,
per layer): with N rows, k outputs (k_eff = k for the full kernel, 1 with ``trace``), g groups,
p = inputs per patch (+1 for the bias), q = outputs per group, T positions,

    jac:  per row 2·k·T·p·q·g (forming J),     per pair 2·k·k_eff·g·p·q   (the Gram)
    pair: per row 0,                           per pair g·(2T²p + 2·k·k_eff·T²q + 2·k_eff²·T²)

and the path with the smaller N·row + N²·pair flops is taken (ties: fewer bytes kept per row,
k·g·p·q against g·T·(p + k·q)).  Linear layers on flat inputs (T = 1) take the pair path,
early convolutions with many positions the jac path, late small-image convolutions with wide
channels the pair path.

Everything else falls back to the generic path *for those parameters only*: parameters of other
module types, raw ``nn.Parameter`` s used directly in a forward, parameters tied between modules,
and parameters of a supported module that are used outside its own forward call (detected with a
``TorchFunctionMode`` during a one-row probe) get per-sample Jacobians ``vmap(jacrev)`` over
``functional_call`` for just those parameters, and their Gram is added.  Buffers stay fixed.
Modules that couple the samples of a batch (batch norm in training mode or without running
statistics, dropout in training mode) are refused with ``ValueError``: the NTK is defined per
sample.

The package, one concern per module: :mod:`.record` (which layers a rule covers, the forward pass
with hooks, the batched backward pass, the memory limits), :mod:`.rules` (each layer's factors and
path costs), :mod:`.fallback` (the generic path for uncovered parameters), :mod:`.factors`
(:func:`module_factors`), :mod:`.tile` (:func:`module_gram_tile`), :mod:`.cost`
(:func:`module_cost`), :mod:`.pieces` (the tile engine's pieces).  The torch backend uses it for ``implementation="structured"`` (and for
``"auto"`` when :func:`module_cost` says it is the cheapest), through the tile engine
(:mod:`ntkframe_torch.autodiff`).

torch is imported inside the functions only: importing the plugin package does not import it.
"""

from __future__ import annotations

from .cost import Cost, module_cost
from .factors import ModuleFactors, module_factors
from .record import refuse_sample_coupling
from .tile import module_gram_tile, structured_module_ntk

__all__ = ["Cost", "ModuleFactors", "module_cost", "module_factors", "module_gram_tile", "refuse_sample_coupling",
           "structured_module_ntk"]
