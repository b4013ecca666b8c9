"""Exceptions with messages a researcher can act on. Every one names the thing that was wrong
(a file, a config field path, a component name)."""

from __future__ import annotations

__all__ = [
    "ComponentNotFoundError",
    "ConfigError",
    "DataError",
    "FacerepError",
    "PluginError",
    "RegistrationCollisionError",
    "TrainingError",
]


class FacerepError(Exception):
    """Base class of facerep's errors; the CLI prints these without a traceback."""

    exit_code = 1


class ConfigError(FacerepError):
    """A config file or override is malformed; the message names the field path."""

    exit_code = 2


class DataError(FacerepError):
    """A data file is missing or malformed; the message names the file (and line when known)."""

    exit_code = 3


class PluginError(FacerepError):
    """A plugin failed to load or declared something invalid."""

    exit_code = 4


class ComponentNotFoundError(FacerepError, KeyError):
    """An unknown component name; the message lists close matches and the installed plugins."""

    exit_code = 5

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RegistrationCollisionError(PluginError):
    """Two plugins registered the same qualified name; the message names both distributions."""


class TrainingError(FacerepError):
    """Training cannot go on (a non-finite loss); the last checkpoint before it is kept."""

    exit_code = 7
