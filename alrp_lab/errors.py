"""The errors a user can cause and fix: one hierarchy, so the CLI knows them from bugs.

Every class here derives from :class:`AlrpLabError` and from the builtin a caller would
expect (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file,
``RuntimeError`` for a run that cannot go on), and carries a one-line message that names
the fix. The command line prints such an error as one line and exits with status 2; any
other exception is a bug in alrp-lab and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AlrpLabError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "NonFiniteLossError",
    "ReadmeError",
    "ResultsError",
    "ResultsNotFoundError",
    "RunError",
    "RunFolderError",
    "SweepError",
    "SweepNotFoundError",
    "WeightsError",
    "WeightsNotFoundError",
]


class AlrpLabError(Exception):
    """A problem with what the user gave (config, files, folders); the message names the fix."""


class ConfigError(AlrpLabError, ValueError):
    """A configuration a user wrote that cannot run."""


class DataError(AlrpLabError, ValueError):
    """A data set (COCO folder, annotation or detections file) that cannot be used."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set's folder or file is missing."""


class WeightsError(AlrpLabError, ValueError):
    """A backbone weights file that cannot be loaded into the configured model."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """``backbone.weights`` points to no file."""


class CheckpointError(AlrpLabError, ValueError):
    """A checkpoint that does not fit this run (``train.resume=true``)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """``train.resume=true`` with no checkpoint where one is expected."""


class RunFolderError(AlrpLabError, ValueError):
    """The run folder holds work that this run would replace without being asked to."""


class RunError(AlrpLabError, RuntimeError):
    """A run that cannot go on (its files say why)."""


class NonFiniteLossError(RunError):
    """The loss or gradient became NaN or infinite; the last good checkpoint is kept."""


class SweepError(AlrpLabError, ValueError):
    """A sweep definition or sweep folder that cannot be run as asked."""


class SweepNotFoundError(SweepError, FileNotFoundError):
    """A sweep definition file that does not exist."""


class ResultsError(AlrpLabError, ValueError):
    """Results files or folders that cannot make a table, claim or plot."""


class ResultsNotFoundError(ResultsError, FileNotFoundError):
    """A results folder or file that does not exist."""


class ReadmeError(ResultsError):
    """A Markdown file whose generated blocks cannot be read or run (``alrp-lab readme``)."""
