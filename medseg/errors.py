"""Domain errors. The CLI turns every ``MedsegError`` into one line on stderr and exit code 1.

Messages name the file and the problem, never patient data (DICOM names, IDs, birth dates).
"""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """Base class: a problem with the user's input or environment (exit code 1)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputError(MedsegError):
    """A file or folder that cannot be read, or whose content is invalid."""


class GeometryError(MedsegError):
    """Two images that should share a grid do not (shape, spacing, orientation, origin)."""


class LabelError(MedsegError):
    """Label values that are not integers or are not declared in the label list."""


class OutputExistsError(MedsegError):
    """An output already exists and ``--overwrite`` was not given."""


class CheckpointError(MedsegError):
    """A checkpoint that is corrupt, unsafe to load, or from an incompatible version."""


class ConfigError(MedsegError):
    """A configuration value that cannot work with the data or the device."""


class TrainingError(MedsegError):
    """Training that cannot go on, e.g. a loss that diverged to NaN or infinity."""


class UsageError(Exception):
    """A wrong command-line usage detected inside the library (exit code 2), e.g. an unknown architecture."""
