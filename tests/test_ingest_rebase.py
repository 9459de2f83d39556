"""Arrivals are rebased when inserted (no UPDATE of the stage): stored values are exactly
the timestamp's epoch minus the earliest finite arrival, rows out of time order included,
and the row checks see the rebased values."""

from __future__ import annotations

import duckdb

from servecast.store import Store

STAMPS = ["2024-05-10 00:00:05.250000+00:00", "2024-05-10 00:00:01.125000+00:00",
          "not a time", "2024-05-09 23:59:59.999999+00:00", "2024-05-10 00:01:00+02:00"]


def test_arrivals_rebased_on_insert_match_the_epoch_difference(tmp_path):
    csv = tmp_path / "AzureLLMInferenceTrace_2024_x.csv"
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   + "".join(f"{s},{10 + i},{i}\n" for i, s in enumerate(STAMPS)))
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest("azure-llm", [csv])
        got = store.con.execute("SELECT request_id, arrival_s FROM llm_requests "
                                "ORDER BY request_id").fetchall()
        rejected = store.con.execute("SELECT line, reason FROM rejected_rows").fetchall()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    epochs = [con.execute("SELECT epoch(?::TIMESTAMPTZ)", [s]).fetchall()[0][0]
              for s in STAMPS if s != "not a time"]
    t0 = min(epochs)
    assert (result.rows, result.rejected) == (4, 1)
    assert rejected == [(4, "TIMESTAMP is not a date-time")]
    assert [r for r, _ in got] == [0, 1, 3, 4]  # source order, the rejected row's id unused
    assert [a for _, a in got] == [e - t0 for e in epochs]  # exact, not approximately
    assert min(a for _, a in got) == 0.0
