"""Infinite-width theory: Gaussian moments (gaussian.py), the analytic H* and NNGP kernels (analytic.py),
Monte Carlo over initialisations (montecarlo.py) and kernel predictions (predict.py, ntkgp.py)."""
