"""The one number formatter (`servecast.numbers.fmt`) of CLI tables, reports and the
dashboard's metric tiles."""

from __future__ import annotations

import pytest

from servecast.numbers import fmt


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), (True, "yes"), (False, "no"), (0, "0"), (1234567, "1,234,567"),
    (0.123456, "0.1235"), (3.14159, "3.142"), (9999.4, "9999"), (9999.5, "10,000"),
    (123456.7, "123,457"), (1e-5, "1e-05"),
    (-2.5e6, "-2,500,000"), ([1, 2.5, None], "1, 2.5, -"), ("h100", "h100"),
])
def test_fmt(value, text):
    assert fmt(value) == text


def test_missing_marker_is_the_callers():
    assert fmt(None, missing="") == ""
    assert fmt([None], missing="–") == "–"
