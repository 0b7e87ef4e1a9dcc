"""Exceptions with one-line messages that name the problem and the fix."""

from __future__ import annotations


class ZFReproError(Exception):
    """Base class for the package's user-facing errors."""


class DataError(ZFReproError, ValueError):
    """A dataset root, split, class folder or image file is missing or unreadable."""


class ConfigError(ZFReproError, ValueError):
    """An unknown profile, profile field, architecture or parameter."""


class DeconvError(ZFReproError, ValueError):
    """A model the deconvnet cannot invert, or a layer/channel/position that does not exist."""


class LayerError(ConfigError, DeconvError):
    """A layer name that is not a layer of the network (or not one the analysis can use): one type and
    one one-line message, naming the valid layers, from every analysis (:class:`zfrepro.layers.LayerStack`).
    A :class:`ConfigError` and a :class:`DeconvError` (and so a ``ValueError``), whichever a caller catches."""


class CheckpointError(ZFReproError, ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


class StorageError(ZFReproError, OSError):
    """A file cannot be written: a full disk, a read-only or unwritable folder (the decode cache,
    the runs, results or build directory). Nothing already there is torn or lost."""
