"""The one frame coercer (`servecast.frames.to_polars`) of predictor and simulator inputs."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from servecast.errors import InvalidInputError
from servecast.frames import to_polars

WANT = pl.DataFrame({"prompt_tokens": [12, 40], "op": ["bmm", "gelu"]})


@pytest.mark.parametrize("given", [
    WANT, WANT.to_pandas(), WANT.to_arrow(), WANT.to_dict(as_series=False), WANT.to_dicts(),
], ids=["polars", "pandas", "arrow", "columns", "rows"])
def test_every_accepted_form_gives_the_same_frame(given):
    assert to_polars(given).equals(WANT)


def test_polars_is_returned_as_is():
    assert to_polars(WANT) is WANT


@pytest.mark.parametrize("bad", ["prompt_tokens", 3, pa.array([1, 2]),
                                 pd.Series([1, 2]).to_numpy()])
def test_anything_else_names_what_and_the_forms(bad):
    with pytest.raises(InvalidInputError, match="^requests: expected a polars or pandas"):
        to_polars(bad, "requests")
