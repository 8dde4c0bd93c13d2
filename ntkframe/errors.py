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
