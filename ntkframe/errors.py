"""Exception types of ntkframe; each message says what was wrong and what is allowed."""

from __future__ import annotations


class NtkframeError(Exception):
    """Base class of ntkframe's errors."""


class PluginError(NtkframeError):
    """A plugin could not be loaded, or two plugins registered the same name."""


class UnknownNameError(NtkframeError, KeyError):
    """A backend, model, activation, ... name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class BackendUnavailableError(NtkframeError):
    """The backend's framework or device is missing."""


class ConfigError(NtkframeError, ValueError):
    """A configuration file or value is invalid."""


class DivergenceError(NtkframeError, FloatingPointError):
    """A simulation blew up (NaN, loss growing without bound)."""


class InvalidOptionError(NtkframeError, ValueError):
    """An option outside its allowed values (``implementation=``, ``block_size=``, ``trace=``, ``blas=``...);
    the same misuse raises it on every backend."""


class StoreError(NtkframeError):
    """A stored or resumable result (run folder, kernel file, checkpoint) cannot be used as asked."""


class StoreMismatchError(StoreError, ValueError):
    """Resuming with settings other than those the stored results were computed with."""

    def __init__(self, message: str, differences: list[str] | None = None):
        super().__init__(message)
        self.differences = list(differences or [])


class NotAStoreError(StoreError, ValueError):
    """A folder or file that ntkframe did not write (or cannot read back) where it would store results."""


class StoreLockedError(StoreError):
    """Another live process holds the folder's lock."""


class IncompleteResultError(StoreError):
    """A stored result with missing or corrupt parts (an interrupted or damaged kernel file)."""


class ExecutorError(NtkframeError, RuntimeError):
    """Workers could not be started or reached: a process pool whose workers die at start-up, a Dask
    scheduler address that does not answer."""


class InputError(NtkframeError):
    """An argument of a public function (params, X, y, seed, ...) that cannot be used; the message names
    the argument, what it was and what is allowed.  Raised as one of the three subclasses below, which
    are also the built-in exception a caller may already catch."""


class InputValueError(InputError, ValueError):
    """An argument of the right type with a bad value: shape, dtype, NaN/inf, complex numbers, a negative seed."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type: params given as a list, an array of another framework or device, a string."""


class ParamKeyError(InputError, KeyError):
    """A parameter dict missing a key the model needs (or holding one it does not have)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StabilityWarning(UserWarning):
    """A fixed-step integrator's step exceeds the stable bound at θ(0): the run may survive, but what it
    computes is no longer (an approximation of) gradient flow (docs/theory.md §6)."""


class StoreExistsError(StoreError, FileExistsError):
    """A folder already holds a stored run that this call would start afresh (pass it as ``resume=``)."""
