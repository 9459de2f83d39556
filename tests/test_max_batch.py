"""Max batch tuning (`simulator.max_batch`, `servecast capacity --max-num-seqs auto`) on the
real simulator with the physics step-time model and the ShareGPT length distribution."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from servecast.errors import InvalidInputError
from servecast.simulator import max_batch, search
from servecast.simulator.core import Engine, Request
from servecast.simulator.workloads import lengths, poisson_arrivals
from tests.test_capacity import SLO, SMALL, servecast


@pytest.fixture(scope="module")
def tuned():
    return max_batch.tune(search.compile_replica(SMALL), SLO,
                          search.poisson_sample("sharegpt", 150), seeds=1)


def test_the_tuned_cap_is_the_best_searched_and_no_worse_than_the_default(tuned):
    sample = search.poisson_sample("sharegpt", 150)
    default = search.capacity(search.compile_replica(SMALL), SLO, sample, seeds=1)
    # the deployment's own cap is among the candidates, searched as a plain search would
    assert tuned.rates[SMALL.max_num_seqs] == default.rate
    assert tuned.capacity.rate >= default.rate
    # the chosen cap has the highest capacity, ties going to the smaller cap
    best = max(tuned.rates.values())
    assert tuned.max_num_seqs == min(c for c, r in tuned.rates.items() if r == best)
    assert tuned.capacity.rate == best
    assert tuned.compiled.deployment.max_num_seqs == tuned.max_num_seqs
    # the grid starts at the KV bound (the KV cache's requests at the mean prompt) and
    # halves from there; the coarse pass ends at the first cap below the best
    prompt = sample(0)[0]
    bound = math.floor(tuned.compiled.memory["kv_capacity_tokens"] / prompt.mean())
    assert tuned.kv_bound == bound and bound in tuned.rates
    coarse = [c for c in tuned.rates if c in {bound // 2 ** k for k in range(12)}]
    assert tuned.rates[min(coarse)] < best or min(coarse) <= 2 * max_batch.MIN_CAP
    # a cap that starves the batch costs capacity
    assert min(tuned.rates.values()) < best


def test_capacity_at_a_given_cap_or_the_tuned_one(tuned):
    """`capacity_at`: a given cap is one plain search at that cap, None is `tune`'s."""
    sample = search.poisson_sample("sharegpt", 150)
    at64 = search.compile_replica(replace(SMALL, max_num_seqs=64))
    cap, compiled, none = max_batch.capacity_at(at64, SLO, sample)
    plain = search.capacity(at64, SLO, sample, seeds=1)
    assert none is None and compiled is at64
    assert cap.rate == plain.rate and cap.per_seed == plain.per_seed
    cap, compiled, got = max_batch.capacity_at(search.compile_replica(SMALL), SLO, sample,
                                               auto=True)
    assert got.max_num_seqs == tuned.max_num_seqs == compiled.deployment.max_num_seqs
    assert cap.rate == tuned.capacity.rate


def test_every_seed_of_the_chosen_cap_reports_its_own_rate():
    """With several seeds, a seed below the best rate so far answers 0 inside the tuning
    (the floor); the chosen cap's capacity still gives each seed its own rate."""
    got = max_batch.tune(search.compile_replica(SMALL), SLO,
                         search.poisson_sample("sharegpt", 150), seeds=3)
    assert len(got.capacity.per_seed) == 3 and min(got.capacity.per_seed) > 0
    assert got.capacity.rate == pytest.approx(float(np.median(got.capacity.per_seed)))


def test_a_cap_bounds_the_running_batch():
    cap = 12
    eng = Engine(search.compile_replica(replace(SMALL, max_num_seqs=cap)))
    prompt, output = lengths("sharegpt", 80, seed=0)
    for i, (a, p, o) in enumerate(zip(poisson_arrivals(80, 50.0, 0), prompt, output,
                                      strict=True)):
        eng.add(Request(i, float(a), int(p), int(o)))
    most = 0
    while eng.step() is not None:
        most = max(most, len(eng.running))
    assert most == cap  # the queue fills the cap at 50 req/s, never more


def test_the_given_compiled_cap_is_searched_as_is_and_each_other_cap_compiled_once(
        monkeypatch):
    """`tune` searches the compiled deployment it is given at its own cap (no second compile
    of it) and compiles every other cap it tries once, with the given one's runtime."""
    base = search.compile_replica(SMALL)
    made, compile_replica = [], search.compile_replica
    monkeypatch.setattr(search, "compile_replica", lambda d, rt=None: made.append(
        (d.max_num_seqs, rt)) or compile_replica(d, rt))
    got = max_batch.tune(base, SLO, search.poisson_sample("sharegpt", 60), seeds=1, fine=0)
    caps = [c for c, _ in made]
    assert sorted(caps) == sorted(set(got.rates) - {SMALL.max_num_seqs})
    assert made and all(rt is base.runtime for _, rt in made)


def test_bad_grids_and_an_slo_no_cap_meets():
    base = search.compile_replica(SMALL)
    with pytest.raises(InvalidInputError, match="ratio=1.0 must be > 1"):
        max_batch.tune(base, SLO, ratio=1.0)
    with pytest.raises(InvalidInputError, match="fine=-1"):
        max_batch.tune(base, SLO, fine=-1)
    with pytest.raises(search.SLOUnreachableError, match="at every max_num_seqs tried: 8, "):
        max_batch.tune(base, search.SLO(tpot_ms=1.0), search.poisson_sample("sharegpt", 40))


@pytest.mark.slow  # three CLI processes, one tuning
def test_capacity_cli_max_num_seqs_auto(tmp_path):
    out = tmp_path / "cap.json"
    args = ("capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--ttft-ms", "300",
            "--tpot-ms", "30", "--requests", "150", "--seeds", "1")
    r = servecast(*args, "--max-num-seqs", "auto", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    # None: the cap did not hold the best rate so far, its only probe
    rates = {int(c): v or 0.0 for c, v in res["max_num_seqs_rates"].items()}
    assert "max_num_seqs auto (cap: req/s):" in r.stdout and rates[256] > 0
    assert res["rate"] == max(rates.values()) >= rates[256]
    assert res["max_num_seqs"] == min(c for c, v in rates.items() if v == res["rate"])
    assert all(p["rate"] <= res["saturation_rps"] for p in res["probes"])
    for bad in ("0", "lots"):
        r = servecast(*args, "--max-num-seqs", bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"--max-num-seqs {bad!r}: give a positive integer" in r.stderr
    assert np.isfinite(res["rate"])


def test_a_floor_costs_one_probe_where_it_fails():
    """`search.capacity(floor_rps=)`: a floor above the capacity ends each seed after one
    failing probe (answer 0); a floor it holds bounds the bisection from below."""
    small = search.compile_replica(SMALL)
    sample = search.poisson_sample("sharegpt", 150)
    full = search.capacity(small, SLO, sample, seeds=1)
    fail_above = min(p["rate"] for p in full.probes if not p["met"] and p["rate"] > full.rate)
    over = search.capacity(small, SLO, sample, seeds=1, floor_rps=fail_above)
    assert over.rate == 0.0 and [p["rate"] for p in over.probes] == [fail_above]
    assert not over.probes[0]["met"]
    held = search.capacity(small, SLO, sample, seeds=1, floor_rps=full.rate)
    assert held.probes[0]["rate"] == full.rate and held.probes[0]["met"]
    assert full.rate <= held.rate < fail_above
    assert all(p["rate"] >= full.rate for p in held.probes)
