"""The ntkframe version (one place: the package, plugins provenance and the CLI read it)."""

__version__ = "0.1.0"
