"""Small helpers shared by the codec-level tests (pytest puts ``tests/`` on ``sys.path``).

The untrained smoke model's hyper-synthesis output layer (``h_s.out``) is zero-initialised, so every
position of a granularity gets the same mean and scale and therefore the *same* integer index table:
a codec test on it never sees a table that varies from one position to the next (a coder that used
row 0 for every symbol, or rows in the wrong order, would pass). :func:`vary_hyper_tables` gives that
layer small seeded random weights before ``model.update()``, as a trained model's varied predictions.
"""

from __future__ import annotations

import numpy as np
import torch

from hvq.nets.blocks import RateEmbedding
from hvq.nets.hyperprior import HyperSynthesis

#: Standard deviation of the random ``h_s.out`` weights: enough to move the means over many grid steps.
VARY_STD = 0.3


def vary_hyper_tables(model, seed: int = 1, std: float = VARY_STD):
    """Give every ``hyperpriors[i].h_s.out.weight`` seeded ``N(0, std**2)`` values, then ``model.update()``.

    Returns the model (changed in place). The means and scales then vary across positions, so
    ``model.analyze(...).freqs[g]`` has many distinct rows (check with :func:`distinct_tables`).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for hp in model.hyperpriors:
            hp.h_s.out.weight.copy_(std * torch.randn(hp.h_s.out.weight.shape, generator=g))
    model.update()
    return model


def distinct_tables(freqs: np.ndarray) -> int:
    """Number of distinct rows of an ``(n, K)`` table array (0 for no rows)."""
    freqs = np.asarray(freqs)
    return 0 if freqs.shape[0] == 0 else len(np.unique(freqs, axis=0))


def assert_tables_vary(freqs: list[np.ndarray] | tuple[np.ndarray, ...], min_rows: int = 2) -> None:
    """Every granularity with at least ``min_rows`` coded positions has more than one distinct table,
    and at least one granularity has that many positions (so the check is not empty)."""
    checked = 0
    for g, f in enumerate(freqs):
        if f.shape[0] >= min_rows:
            checked += 1
            assert distinct_tables(f) > 1, (
                f"granularity {g}: all {f.shape[0]} coded positions share one table"
            )
    assert checked, f"no granularity has {min_rows} or more coded positions: {[f.shape for f in freqs]}"


def random_hyper_synthesis(hidden: int = 32, seed: int = 0) -> tuple[HyperSynthesis, RateEmbedding]:
    """A seeded ``HyperSynthesis`` (D=4, Cz=8, diagonal) whose zero-initialised layers (``out``, the
    FiLM projection) get random weights, so means, scales and the lambda conditioning all vary."""
    torch.manual_seed(seed)
    h_s, embed = HyperSynthesis(4, hidden, 8, 32, isotropic=False), RateEmbedding(32)
    with torch.no_grad():
        h_s.out.weight.normal_(0.0, 0.05)
        h_s.film.proj.weight.normal_(0.0, 0.1)
        h_s.film.proj.bias.normal_(0.0, 0.1)
    return h_s, embed
