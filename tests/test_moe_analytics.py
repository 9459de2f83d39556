"""MoE imbalance analytics on known frames and on the shared OLMoE/Mixtral counts; CLI."""

from __future__ import annotations

import polars as pl
import pytest

from servecast.analytics.moe import imbalance, shares
from servecast.predictors.moe_congestion.domains import domain_transfer, transfer_summary


def test_metrics_on_known_loads():
    df = pl.DataFrame({"model": ["m"] * 8, "domain": ["a"] * 4 + ["b"] * 4,
                       "layer": [0] * 8, "expert": [0, 1, 2, 3] * 2,
                       "tokens": [5, 5, 5, 5, 4, 0, 0, 0]})
    r = {row["domain"]: row for row in imbalance(df).iter_rows(named=True)}
    assert r["a"]["maxvio"] == pytest.approx(0) and r["a"]["gini"] == pytest.approx(0)
    assert r["a"]["norm_entropy"] == pytest.approx(1) and r["a"]["max_min"] == pytest.approx(1)
    assert r["b"]["maxvio"] == pytest.approx(3) and r["b"]["gini"] == pytest.approx(0.75)
    assert r["b"]["dead_experts"] == 3 and r["b"]["max_min"] is None
    assert r["b"]["norm_entropy"] == pytest.approx(0)


def test_missing_experts_count_as_dead():
    df = pl.DataFrame({"model": ["m"] * 5, "domain": ["a"] * 3 + ["b"] * 2, "layer": [0] * 5,
                       "expert": [0, 1, 2, 0, 2], "tokens": [1, 1, 1, 3, 3]})
    r = {row["domain"]: row for row in imbalance(df).iter_rows(named=True)}
    assert r["b"]["experts"] == 3 and r["b"]["dead_experts"] == 1


@pytest.fixture(scope="module")
def olmoe_store(tmp_path_factory, data):
    from servecast.store import Store

    path = tmp_path_factory.mktemp("moe") / "moe.duckdb"
    with Store(path) as store:
        store.ingest("olmoe-routing", [data / "moe" / "olmoe_routing"], trace="olmoe_routing")
    store = Store(path, read_only=True)
    yield store
    store.close()


def test_shared_olmoe_mixtral_counts(olmoe_store):
    imb = imbalance(olmoe_store, "olmoe_routing")
    assert set(imb["model"]) == {"olmoe", "mistral"}
    assert set(imb["layer"]) == {0, 7, 15}
    assert imb.filter(pl.col("model") == "olmoe")["experts"].unique().to_list() == [64]
    assert imb.filter(pl.col("model") == "mistral")["experts"].unique().to_list() == [8]
    # OLMoE's top-1 routing is far less balanced than Mixtral's
    mean = imb.group_by("model", "assignment").agg(pl.col("maxvio").mean())
    get = {(m, a): v for m, a, v in mean.iter_rows()}
    assert get[("olmoe", "top1")] > 5 * get[("mistral", "top1")]
    s = shares(olmoe_store, "olmoe_routing")
    sums = s.group_by("model", "assignment", "domain", "layer").agg(pl.col("share").sum())
    assert (sums["share"] - 1).abs().max() < 1e-9


@pytest.mark.slow  # leave-one-out fits per domain
def test_domain_transfer_on_shared_counts(olmoe_store):
    t = domain_transfer(shares(olmoe_store, "olmoe_routing"))
    assert t.height == 2 * 3 * 5 + 3 * 5 + 3 * 6  # mistral 2x3 layers x5, olmoe top1/topk
    summ = transfer_summary(t)
    assert summ["l1_congestion"].is_between(0, 2).all()
    # the congestion family contains both baselines; with inner LOO it stays close to the best
    assert (summ["ratio_vs_best_baseline"] < 1.15).all()


@pytest.mark.slow  # the analyze CLI on the OLMoE store
def test_cli_analyze(olmoe_store, tmp_path):
    from servecast.cli import main

    db = str(olmoe_store.path)
    assert main(["moe", "analyze", "olmoe_routing", "--db", db, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "imbalance.png").stat().st_size > 0
    assert main(["moe", "analyze", "nope", "--db", db]) == 2
