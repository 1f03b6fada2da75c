"""The one error a config raises: :class:`ConfigError`, for every module of this package."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a :class:`~leanseg.config.Config`."""
