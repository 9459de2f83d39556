"""The one number formatter of tables and metrics shown to people (CLI tables, HTML
reports, dashboard metrics).

`fmt(v, missing)`: None -> `missing`; bool -> yes / no; int -> thousands separators
(12,345); float -> 4 significant digits (0.1235, 3.142, 9999), or, where 4 significant
digits would need an exponent (from 9999.5 up), a rounded integer with separators (12,346:
never 1.235e+04); list -> its items formatted, comma
separated; anything else -> str(v).
"""

from __future__ import annotations

from typing import Any

#: from this magnitude a float is shown as a rounded integer with thousands separators
#: (`.4g` would write 9999.5 as 1e+04)
BIG = 9999.5


def fmt(v: Any, missing: str = "-") -> str:
    """`v` as text for a table cell (see the module docstring)."""
    if v is None:
        return missing
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= BIG else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(fmt(x, missing) for x in v)
    return str(v)
