"""Conformance kit for ntkframe plugins: the checks every backend, model and activation must pass.

A plugin author runs it against the names their plugin registers (the pytest plugin ships with
ntkframe, entry-point group ``pytest11``, so installing ntkframe is all it takes)::

    pytest --pyargs ntkframe.testing --ntkframe-backend mybackend
    pytest --pyargs ntkframe.testing --ntkframe-model mymodel --ntkframe-activation myact

Each option may be repeated or take a comma-separated list; ``--ntkframe-device cuda`` builds the
backends on a device.  With nothing selected every check skips and says how to select something.
The built-in backends, models and activations go through the same kit in ntkframe's own CI
(tests/test_conformance.py).  The numerical helpers live in :mod:`ntkframe.testing.checks`
(no pytest needed); the checks themselves in ``test_backend.py``, ``test_model.py`` and
``test_activation.py`` of this package.
"""
