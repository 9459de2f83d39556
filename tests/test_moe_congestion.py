"""CongestionGame: equilibrium solver, planted-gamma recovery, baselines, persistence,
Estimator runtime, phase segmentation, domain transfer (numpy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from servecast.errors import InvalidInputError
from servecast.predictors.moe_congestion.domains import congestion_mean, leave_one_domain_out
from servecast.predictors.moe_congestion.equilibrium import _softmax, equilibrium
from servecast.predictors.moe_congestion.game import CongestionGame
from servecast.predictors.moe_congestion.synthetic import planted_batches
from servecast.predictors.moe_congestion.trajectory import segment_phases


@pytest.mark.parametrize("gamma", [0.0, 3.0, 40.0, 300.0])
def test_equilibrium_is_a_fixed_point(gamma):
    rng = np.random.default_rng(0)
    q, w = rng.normal(size=(5, 3, 16)), rng.dirichlet(np.ones(3), size=5)
    load = equilibrium(q, w, 2.0, gamma)
    again = np.einsum("bk,bke->be", w, _softmax(2.0 * q - gamma * load[:, None]))
    assert np.abs(again - load).max() < 1e-8
    np.testing.assert_allclose(load.sum(1), 1.0)


def test_congestion_flattens_loads():
    q = np.random.default_rng(1).normal(size=(1, 1, 8))
    peaks = [equilibrium(q, None, 3.0, g).max() for g in (0.0, 5.0, 50.0)]
    assert peaks[0] > peaks[1] > peaks[2] > 1 / 8


@pytest.mark.parametrize("gamma", [4.0, 16.0])
def test_recovers_planted_gamma_within_10_percent(gamma):
    d = planted_batches(2.0, gamma, n_batches=60, n_types=4, tokens=4096, seed=3)
    game = CongestionGame(n_bootstrap=0).fit_arrays(d.loads, d.quality, d.weights)
    fit = game.fits[0]
    assert abs(fit.gamma - gamma) / gamma < 0.10
    assert abs(fit.beta - 2.0) / 2.0 < 0.10


@pytest.mark.slow  # bootstrap refits
def test_softmax_baseline_and_bootstrap_ci():
    d = planted_batches(1.5, 10.0, n_batches=40, n_types=3, tokens=2048, seed=4)
    game = CongestionGame(n_bootstrap=8).fit_arrays(d.loads, d.quality, d.weights)
    soft = CongestionGame(fix_gamma=0.0, n_bootstrap=0).fit_arrays(d.loads, d.quality, d.weights)
    assert soft.fits[0].gamma == 0.0
    assert game.fits[0].l1 < soft.fits[0].l1  # the planted congestion is visible
    p = game.params.row(0, named=True)
    assert 0 <= p["gamma_lo"] <= p["gamma_hi"]
    assert p["gamma_lo"] < 10.0 * 1.5 and p["gamma_hi"] > 10.0 / 1.5
    pred = game.predict_loads(d.quality, d.weights)
    np.testing.assert_allclose(pred.sum(1), 1.0)


def test_save_load_and_estimator(tmp_path):
    from servecast.estimator import Estimator

    d = planted_batches(2.0, 12.0, n_batches=40, n_types=1, n_experts=8, tokens=8192, seed=5)
    game = CongestionGame(n_bootstrap=0).fit_arrays(d.loads, d.quality[:, 0])
    game.save(tmp_path / "moe_congestion")
    again = CongestionGame.load(tmp_path / "moe_congestion")
    np.testing.assert_allclose(again.predict_loads(d.quality[:3, 0]),
                               game.predict_loads(d.quality[:3, 0]))
    est = Estimator.load(tmp_path)
    one = planted_batches(2.0, 12.0, n_batches=1, n_types=1, n_experts=8, tokens=200_000, seed=6)
    g = est.moe_congestion(one.loads[0], one.quality[0, 0])
    assert abs(g - 12.0) / 12.0 < 0.25
    gs = est.moe_congestion_batch([(one.loads[0], one.quality[0, 0])] * 2)
    assert gs == [g, g]
    with pytest.raises(InvalidInputError):
        est.moe_congestion([1.0, 2.0, 3.0], [0.1, 0.2])


def test_input_errors_name_the_problem():
    game = CongestionGame(n_bootstrap=0)
    with pytest.raises(InvalidInputError, match="NaN"):
        game.fit_arrays(np.ones((2, 4)), np.array([[0.0, np.nan, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(InvalidInputError, match="types"):
        game.fit_arrays(np.ones((2, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(InvalidInputError, match=">= 0"):
        game.fit_arrays(-np.ones((2, 4)), np.zeros((2, 4)))
    with pytest.raises(InvalidInputError, match="not fitted"):
        game.predict_loads(np.zeros(4))


def test_phase_segmentation_finds_three_phases():
    x = np.arange(15)
    y = np.r_[np.linspace(14, 38, 5), [38, 37.5, 38.5, 38, 38.2], np.linspace(33, 9, 5)]
    assert [s["phase"] for s in segment_phases(x, y)] == ["surge", "stabilization",
                                                          "relaxation"]
    assert [s["phase"] for s in segment_phases(x, np.full(15, 5.0))] == ["stabilization"]


def test_domain_transfer_interpolates_means():
    loads = np.random.default_rng(7).dirichlet(np.ones(8), size=5)
    geo = np.exp(np.log(loads).mean(0))
    np.testing.assert_allclose(congestion_mean(loads, 0.0), geo / geo.sum(), atol=1e-9)
    np.testing.assert_allclose(congestion_mean(loads, 1e5), loads.mean(0), atol=1e-3)
    np.testing.assert_allclose(congestion_mean(loads, 0.0, beta=1e-9), np.full(8, 1 / 8),
                               atol=1e-6)
    rows = leave_one_domain_out(loads * 1000)
    assert len(rows) == 5 and all(0 <= r["l1_congestion"] <= 2 for r in rows)


def test_quality_prior_shrinks_noise_not_signal():
    from servecast.predictors.moe_congestion.batches import QualityPrior, to_batches

    rng = np.random.default_rng(8)
    B, n, E = 40, 50, 6
    batch = np.repeat(np.arange(B), n)
    profile = rng.normal(size=E)
    level = rng.normal(scale=3.0, size=(B * n, 1))  # per-token loss level: must not matter
    noise_only = profile + level + rng.normal(size=(B * n, E))
    p = QualityPrior.fit(noise_only, batch)
    assert p.n0 > 5 * n  # batch means differ only by sampling noise: trust the profile
    np.testing.assert_allclose(p.profile[0], profile - profile.mean(), atol=0.05)
    shift = np.repeat(rng.normal(scale=2.0, size=(B, E)), n, axis=0)
    real = noise_only + shift
    assert QualityPrior.fit(real, batch).n0 < 0.1 * n  # real batch differences: keep them
    choices = rng.integers(0, E, size=(B * n, 1))
    raw = to_batches(choices, noise_only, batch)
    shrunk = to_batches(choices, noise_only, batch, prior=p)
    truth = profile - profile.mean()
    assert np.abs(shrunk.quality[:, 0] - truth).mean() < 0.3 * np.abs(
        raw.quality[:, 0] - truth).mean()
    np.testing.assert_allclose(raw.loads, shrunk.loads)


@pytest.mark.slow
def test_type_count_by_cv_on_training_batches():
    from servecast.predictors.moe_congestion.analysis import compare, select_types

    rng = np.random.default_rng(9)
    B, n, E = 24, 40, 4
    batch = np.repeat(np.arange(B), n)
    mix = rng.uniform(0.1, 0.9, size=B)  # share of type-A tokens varies by batch
    is_a = rng.uniform(size=B * n) < mix[batch]
    prof = np.where(is_a[:, None], [1.0, 0, 0, 0], [0, 0, 1.0, 0])
    oracle = prof + 0.3 * rng.normal(size=(B * n, E))
    logits = 3 * prof + 0.3 * rng.normal(size=(B * n, E))
    choices = np.where(is_a, 0, 2)[:, None]
    snap = {"batch": batch, "choices_0": choices, "logits_0": logits, "oracle_0": oracle}
    k, scores = select_types(snap, 0, candidates=(1, 2))
    assert k == 2 and scores[2] < scores[1]
    c = {r["model"]: r for r in compare(snap, 0, n_types=2, cv_types=(1, 2)).iter_rows(
        named=True)}
    assert c["congestion_cv"]["types"] == 2
    assert c["congestion_cv"]["heldout_l1"] < 0.5 * c["congestion"]["heldout_l1"]


def two_populations(rng, batches: int, per_batch: int):
    """Tokens of two populations (expert 0 vs expert 2 preferred, 4 experts) mixed in batch
    shares drawn from U(0.1, 0.9): (batch index, is-population-A, one-hot profile)."""
    batch = np.repeat(np.arange(batches), per_batch)
    mix = rng.uniform(0.1, 0.9, size=batches)
    is_a = rng.uniform(size=batch.size) < mix[batch]
    return batch, is_a, np.where(is_a[:, None], [1.0, 0, 0, 0], [0, 0, 1.0, 0])


def test_router_quality_types_and_protocol_stats():
    from servecast.predictors.moe_congestion.analysis import (
        compare,
        default_shrink,
        protocol_stats,
    )

    assert default_shrink("oracle") and default_shrink("taylor")
    assert not default_shrink("router") and default_shrink("router", True)
    rng = np.random.default_rng(10)
    B = 24
    batch, is_a, prof = two_populations(rng, B, 40)
    logits = 3 * prof + 0.3 * rng.normal(size=prof.shape)
    snap = {"batch": batch, "choices_0": logits.argmax(1)[:, None], "logits_0": logits,
            "doc": batch // 2}
    c = compare(snap, 0, "router", n_types=2)
    by = {r["model"]: r for r in c.iter_rows(named=True)}
    assert not c["shrink"][0]
    # types recover the two token populations: the type composition alone predicts the loads,
    # and the two-type game with router quality does too; one mean logit vector cannot
    assert by["type_mix"]["heldout_l1"] < 0.05
    assert by["congestion_multi"]["heldout_l1"] < 0.5 * by["congestion"]["heldout_l1"]
    st = protocol_stats(snap, 0, n_types=2)
    assert st["batches"] == B and st["heldout_batches"] == 8
    assert st["conversations_per_batch"] == 1 and st["heldout_sharing"] == 0  # by conversation
    assert st["type_share_var"] > 5  # batch mixtures really differ (uniform(0.1, 0.9) shares)
    assert 0 < st["noise_floor_l1"] < 0.2


@pytest.mark.slow  # bootstrap refits on every batch
def test_gamma_on_all_batches_uses_every_batch():
    from servecast.predictors.moe_congestion.analysis import compare, gamma_all_batches

    rng = np.random.default_rng(11)
    B = 18
    batch, is_a, prof = two_populations(rng, B, 30)
    snap = {"batch": batch, "choices_0": np.where(is_a, 0, 2)[:, None],
            "logits_0": 3 * prof + 0.3 * rng.normal(size=prof.shape),
            "oracle_0": prof + 0.3 * rng.normal(size=prof.shape)}
    g = gamma_all_batches(snap, 0, n_types=2, n_bootstrap=4)
    assert g["model"].to_list() == ["congestion", "congestion_multi"]
    assert (g["batches"] == B).all() and g["types"].to_list() == [1, 2]
    row = g.row(1, named=True)
    assert row["gamma_lo"] <= row["gamma_hi"] and row["beta_lo"] <= row["beta_hi"]
    assert row["gamma_over_beta"] == pytest.approx(row["gamma"] / row["beta"])
    # the held-out comparison fits on the training batches of the split only
    split = compare(snap, 0, n_types=2)
    assert split["model"].to_list()[-1] == "congestion_multi"
