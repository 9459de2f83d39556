"""The one frame coercer of the predictors' and the simulator's inputs."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from servecast.errors import InvalidInputError


def to_polars(frame, what: str = "frame") -> pl.DataFrame:
    """`frame` as a polars DataFrame: a polars frame as is; a pandas frame, a pyarrow table,
    a dict of columns or a list of row dicts converted. Anything else raises
    InvalidInputError naming `what` and the accepted forms."""
    if isinstance(frame, pl.DataFrame):
        return frame
    try:
        if isinstance(frame, Mapping):
            return pl.DataFrame(dict(frame))
        if isinstance(frame, list):
            return pl.DataFrame(frame)
        if hasattr(frame, "columns") and hasattr(frame, "to_numpy"):
            return pl.from_pandas(frame)
        df = pl.from_arrow(frame)
        if not isinstance(df, pl.DataFrame):  # a pyarrow array converts to a Series
            raise TypeError("one column without a name")
        return df
    except (TypeError, ValueError, ImportError, pl.exceptions.PolarsError) as e:
        raise InvalidInputError(
            f"{what}: expected a polars or pandas DataFrame, a pyarrow table, a dict of "
            f"columns or a list of row dicts, got {type(frame).__name__} ({e})") from None
