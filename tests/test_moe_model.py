"""Small MoE LM, RoutingRecorder (also on Hugging Face Mixtral/OLMoE), quality estimators,
and a tiny end-to-end run on real ShareGPT text -> trajectory -> CLI."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from servecast.collectors.moe_routing import RoutingRecorder
from servecast.predictors.moe_congestion.model import SmallMoELM
from servecast.predictors.moe_congestion.quality import oracle_quality, taylor_quality


def tiny(top_k=1, seed=0):
    torch.manual_seed(seed)
    return SmallMoELM(vocab=50, d=16, heads=2, layers=2, d_ff=32, n_experts=4, top_k=top_k,
                      context=8).eval()


def _brute_force_oracle(model, win, layer, t_flat, expert):
    """Loss at one token with only that token's first choice at `layer` forced."""
    x, y = win[:, :-1], win[:, 1:]
    B, T = x.shape
    h = model.embed(x)
    for j, blk in enumerate(model.blocks):
        if j == layer:
            normal = blk(h)
            forced = blk(h, force=expert)
            mask = torch.zeros(B * T, 1, dtype=torch.bool)
            mask[t_flat] = True
            h = torch.where(mask.view(B, T, 1), forced, normal)
        else:
            h = blk(h)
    return model.token_loss(model.logits_from(h), y).reshape(-1)[t_flat].item()


@pytest.mark.parametrize("top_k", [1, 2])
def test_oracle_is_exact_single_token_forcing(top_k):
    model = tiny(top_k)
    win = torch.randint(0, 50, (2, 9))
    q = oracle_quality(model, win)
    with torch.no_grad():
        for layer, t, e in [(0, 5, 2), (0, 12, 1), (1, 3, 3)]:
            assert -q[layer, t, e] == pytest.approx(
                _brute_force_oracle(model, win, layer, t, e), abs=1e-4)


def test_taylor_and_oracle_agree_at_the_chosen_expert():
    model = tiny()
    win = torch.randint(0, 50, (2, 9))
    oracle, taylor = oracle_quality(model, win), taylor_quality(model, win)
    with RoutingRecorder(model) as rec, torch.no_grad():
        loss = model.token_loss(model(win[:, :-1]), win[:, 1:]).reshape(-1).numpy()
    for layer in range(2):
        chosen = rec.choices(layer)[:, 0]
        rows = np.arange(len(chosen))
        np.testing.assert_allclose(oracle[layer, rows, chosen], -loss, atol=1e-4)
        np.testing.assert_allclose(taylor[layer, rows, chosen], -loss, atol=1e-4)


def test_recorder_on_small_moe_counts_every_assignment():
    model = tiny(top_k=2)
    with RoutingRecorder(model) as rec, torch.no_grad():
        model(torch.randint(0, 50, (3, 8)))
    assert rec.layers == ["blocks.0.moe.gate", "blocks.1.moe.gate"]
    loads = rec.loads()
    per_layer = loads.group_by("layer", maintain_order=True).agg(pl.col("tokens").sum())
    assert per_layer["tokens"].to_list() == [48, 48]  # 3 x 8 tokens x top-2
    assert rec.logits(0).shape == (24, 4) and rec.choices(1).shape == (24, 2)


@pytest.mark.parametrize("family", ["mixtral", "olmoe"])
def test_recorder_on_hugging_face_moe(family):
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, num_experts_per_tok=2,
                  eos_token_id=None, pad_token_id=None, bos_token_id=None)
    if family == "mixtral":
        cfg = transformers.MixtralConfig(num_local_experts=4, **common)
        model = transformers.MixtralForCausalLM(cfg).eval()
    else:
        cfg = transformers.OlmoeConfig(num_experts=8, **common)
        model = transformers.OlmoeForCausalLM(cfg).eval()
    with RoutingRecorder(model) as rec, torch.no_grad():
        model(torch.randint(0, 64, (2, 5)))
    assert len(rec.layers) == 2 and all(n.endswith("gate") for n in rec.layers)
    assert rec.choices(0).shape == (10, 2)
    assert rec.loads()["tokens"].sum() == 2 * 10 * 2


def test_explicit_gamma_is_the_aux_loss_price_per_token():
    """d(alpha x balance loss) / d p_te times the token count is the per-token price
    c * E * f_e (nats per unit probability) that explicit_gamma / beta states, every layer."""
    from servecast.predictors.moe_congestion.decomposition import (
        explicit_gamma,
        small_moe_aux_coef,
    )

    model = tiny()
    model.hparams.alpha = 0.1
    model(torch.randint(0, 50, (3, 8)))
    lasts = [b.moe.last for b in model.blocks]
    for last in lasts:  # leaves: the partial derivative, not the path through later layers
        last["probs"] = last["probs"].detach().requires_grad_()
    (model.hparams.alpha * model.balance_loss()).backward()
    coef = small_moe_aux_coef(0.1, len(model.blocks))
    for last in lasts:
        n, E = last["probs"].shape
        f = np.bincount(last["choices"].ravel().numpy(), minlength=E) / last["choices"].numel()
        price = explicit_gamma(1.0, coef, E) * f
        np.testing.assert_allclose(last["probs"].grad.numpy() * n, np.tile(price, (n, 1)),
                                   rtol=1e-5)
    assert explicit_gamma(10.0, coef, E) == pytest.approx(10.0 * 0.05 * E)
    with pytest.raises(Exception, match="aux_coef"):
        explicit_gamma(1.0, -0.1, E)


@pytest.mark.slow
def test_tiny_run_trajectory_and_cli(tmp_path):
    from servecast.cli import main
    from servecast.predictors.moe_congestion.run import RunConfig, checkpoints, train_small_moe

    cfg = RunConfig(alpha=0.01, steps=6, snapshots=2, d=16, d_ff=32, heads=2, vocab=256,
                    context=16, batch_size=8, train_conversations=30, eval_conversations=10,
                    eval_windows=24, batch_windows=2, n_experts=4)
    run = train_small_moe(tmp_path / "run", cfg)
    assert [s for s, _ in checkpoints(run)] == [0, 3, 6]
    assert main(["moe", "trajectory", str(run), "--types", "3", "--bootstrap", "0"]) == 0
    assert (run / "trajectory.png").is_file()
    traj = pl.read_csv(run / "trajectory.csv")  # the CLI's trajectory (computed once)
    assert traj.height == 3 * 2 and (traj["gamma"] >= 0).all()
    assert traj["l1_multi"].is_between(0, 2).all()
    assert {"step", "layer", "gamma_lo", "gamma_hi", "l1_softmax"} <= set(traj.columns)
    # alpha 0.01 over 2 layers, 4 experts: gamma_explicit = beta * 0.005 * 4
    np.testing.assert_allclose(traj["gamma_explicit"], traj["beta"] * 0.02, rtol=1e-9)
    np.testing.assert_allclose(traj["gamma_implicit"], traj["gamma"] - traj["gamma_explicit"])
    assert main(["moe", "fit", str(run), "--out", str(tmp_path / "m"), "--types", "3"]) == 0
    assert main(["moe", "trajectory", str(tmp_path / "missing")]) == 2


def test_final_snapshot_reproduces_last_checkpoint(tmp_path):
    """A snapshot of the saved final model on the run's own eval windows equals the last
    checkpoint; a larger one is drawn from the same held-out conversations."""
    from servecast.predictors.moe_congestion.analysis import gamma_all_batches, load_snapshot
    from servecast.predictors.moe_congestion.run import (
        RunConfig,
        checkpoints,
        final_snapshot,
        train_small_moe,
    )

    cfg = RunConfig(alpha=0.01, steps=4, snapshots=1, d=16, d_ff=32, heads=2, vocab=256,
                    context=16, batch_size=8, train_conversations=30, eval_conversations=10,
                    eval_windows=24, batch_windows=2, n_experts=4)
    run = train_small_moe(tmp_path / "run", cfg)
    last = load_snapshot(checkpoints(run)[-1][1])
    same = load_snapshot(final_snapshot(run, 24, seed=cfg.seed, qualities=("oracle",)))
    for key in ("batch", "doc", "choices_0", "choices_1"):
        np.testing.assert_array_equal(same[key], last[key])
    for key in ("loss", "logits_1", "oracle_0", "oracle_1"):
        np.testing.assert_allclose(same[key], last[key], atol=1e-5)
    assert "taylor_0" not in same
    big_path = final_snapshot(run, 40)
    assert big_path == run / "final" / "windows_40.npz"
    big = load_snapshot(big_path)
    assert len(np.unique(big["batch"])) == 20 and big["oracle_0"].shape == (40 * 16, 4)
    assert set(np.unique(big["doc"])) <= set(range(10))  # held-out conversations only
    g = gamma_all_batches(big, 0, n_types=2, n_bootstrap=3)
    assert (g["batches"] == 20).all() and (g["gamma_lo"] <= g["gamma_hi"]).all()
