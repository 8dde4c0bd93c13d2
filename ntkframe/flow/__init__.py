"""Gradient flow: integrators (integrators.py), the exact linearised flow (linearised.py), simulate with its
recorders (simulate.py, recorders.py) and trajectories (trajectory.py), on pytrees of backend arrays (pytree.py)."""
