"""The encoder fine-tune depends only on its seed: the regression head is built after
seeding, so the global torch RNG state before the call changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two Lightning fits of a real MiniLM encoder


def _tuned_head_and_encoder(global_seed: int) -> list:
    import torch

    from servecast.predictors.output_length.embeddings import load_encoder
    from servecast.predictors.output_length.finetune import finetune

    texts = [f"Explain step {i} of making bread in {i % 5 + 1} sentences." for i in range(24)]
    prompt = np.array([len(t.split()) for t in texts])
    output = np.array([40 + 15 * (i % 5) for i in range(24)])
    torch.manual_seed(global_seed)  # whatever ran before the call
    st = load_encoder(max_seq_tokens=32)
    finetune(st, texts, prompt, output, epochs=1, batch_size=8, seed=3)
    return [t.clone() for t in st[0].auto_model.state_dict().values()]


def test_finetune_is_reproducible_whatever_the_global_rng():
    import torch

    a, b = _tuned_head_and_encoder(1), _tuned_head_and_encoder(12345)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
