"""An example ntkframe plugin: the swish activation, a single-threaded NumPy backend, a two-layer net
with a trainable bias, heavy-ball momentum flow, the Huber loss and a command."""

from __future__ import annotations

import click

import ntkframe
from ntkframe import Activation, hookimpl


def _sigmoid(be, z):
    xp = be.xp
    e = xp.exp(-xp.abs(z))
    r = 1.0 / (1.0 + e)
    return xp.where(z >= 0, r, e * r)


def _swish(be, z):
    return z * _sigmoid(be, z)


def _swish_d1(be, z):
    s = _sigmoid(be, z)
    return s + z * s * (1.0 - s)


def _swish_d2(be, z):
    s = _sigmoid(be, z)
    ds = s * (1.0 - s)
    return 2.0 * ds + z * ds * (1.0 - 2.0 * s)


SWISH = Activation("swish", _swish, _swish_d1, _swish_d2)


@hookimpl
def register_activations(register):
    register("swish", SWISH)


@hookimpl
def register_backends(register):
    from ntkframe_numpy import NumpyBackend

    class SerialNumpyBackend(NumpyBackend):
        """The NumPy backend with elementwise work on the calling thread only."""

        name = "numpy_serial"

        def map_rows(self, fn, z, n_out):
            out = fn(z)
            return out if isinstance(out, tuple) else (out,)

    register("numpy_serial", SerialNumpyBackend)


@hookimpl
def register_models(register):
    from .model import BiasedTwoLayerNet

    register("biased_two_layer", BiasedTwoLayerNet)


@hookimpl
def register_integrators(register):
    from .flow import HeavyBall

    register("heavy_ball", HeavyBall)


@hookimpl
def register_losses(register):
    from .flow import Huber

    register("huber", Huber)


@hookimpl
def register_commands(cli):
    @cli.command(name="example-info")
    def example_info():
        """Say what the example plugin registered."""
        click.echo(f"ntkframe {ntkframe.__version__}: example plugin provides activation 'swish', "
                   "backend 'numpy_serial', model 'biased_two_layer', integrator 'heavy_ball' and loss 'huber'")
