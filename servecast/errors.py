"""User-facing errors. The CLI prints their message and exits 2; nothing else is a user error."""

from __future__ import annotations


class ServecastError(Exception):
    """An error the user can fix: the message names the file/line (where known) and the fix."""


class DataFileError(ServecastError):
    """A source file is missing, empty, unreadable, truncated or has the wrong schema."""


class SchemaMismatchError(DataFileError):
    """A file's header does not match the adapter's expected columns."""

    def __init__(self, path: str, expected: list[str], found: list[str], hint: str = ""):
        self.path, self.expected, self.found = path, expected, found
        msg = (
            f"{path}: line 1: header does not match the expected format.\n"
            f"  expected columns: {', '.join(expected)}\n"
            f"  found columns:    {', '.join(found) if found else '(none)'}\n"
            f"  fix: {hint or 'pass the adapter that matches this file (see `servecast datasets`)'}"
        )
        super().__init__(msg)


class RejectedRowsError(DataFileError):
    """Raised under strict ingestion when any row of a file is invalid."""


class StoreLockedError(ServecastError):
    """Another process holds the DuckDB store open for writing."""


class UnknownNameError(ServecastError):
    """An unknown trace, adapter, model, op or device name."""


class InvalidInputError(ServecastError, ValueError):
    """Bad arguments to a predictor or the Estimator (NaN, negative, missing column, ...)."""


class ModelVersionError(ServecastError):
    """A saved model directory was written by an incompatible servecast version."""


class NotFittedError(InvalidInputError):
    """A predictor was asked to predict, evaluate or save before `fit` (or `load`)."""
