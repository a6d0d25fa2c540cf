"""WD-DS weights (Eq. 8-9 and the reference-code variant) against hand-computed cases; sampling."""

import numpy as np
import pytest

from megatron_wmss.selection import sample_active_set, selection_weights


def test_paper_formula_by_hand():
    hs = [1.0, 2.0, 0.5]
    hw = [2.0, 1.0, 0.5]  # dH = -1, +1, 0
    # alpha*[-dH]+ + beta*Hs + gamma*[dH]+ with (0.1, 0.8, 0.1): 0.1+0.8, 1.6+0.1, 0.4
    raw = np.array([0.9, 1.7, 0.4])
    np.testing.assert_allclose(selection_weights(hs, hw), raw / raw.sum(), rtol=1e-15)


def test_paper_formula_uses_strong_entropy_for_difficulty():
    w = selection_weights([1.0, 3.0], [1.0, 1.0], alpha=0.0, beta=1.0, gamma=0.0)
    np.testing.assert_allclose(w, [0.25, 0.75])


def test_reference_formula_by_hand():
    hs = np.array([1.0, 2.0, 0.5, 3.0])
    hw = np.array([2.0, 1.0, 0.5, 1.0])  # dH = -1, 1, 0, 2
    neg, pos = np.array([1, 0, 0, 0.0]), np.array([0, 1, 0, 2.0])
    raw = 0.1 * hw / hw.sum() + 0.8 * neg / neg.sum() + 0.1 * pos / pos.sum()
    got = selection_weights(hs, hw, formula="reference")
    np.testing.assert_allclose(got, raw / raw.sum(), rtol=1e-15)
    assert got.dtype == np.float64 and got.sum() == pytest.approx(1.0, abs=1e-15)


def test_reference_formula_with_an_empty_term():
    hs = hw = np.array([1.0, 2.0])  # dH = 0 everywhere: only the alpha*H_weak term has mass
    np.testing.assert_allclose(selection_weights(hs, hw, formula="reference"), [1 / 3, 2 / 3])


@pytest.mark.parametrize("hs,hw,kwargs,message", [
    ([1.0, -0.1], [1.0, 1.0], {}, "negative strong entropy"),
    ([1.0, np.nan], [1.0, 1.0], {}, "non-finite strong entropy at sample 1"),
    ([1.0, 1.0], [1.0, np.inf], {}, "non-finite weak entropy"),
    ([1.0, 1.0], [1.0], {}, "mismatched lengths"),
    ([1.0], [1.0], {"beta": -1.0}, "beta must be"),
    ([0.0, 0.0], [0.0, 0.0], {}, "all selection weights are zero"),
    ([1.0], [1.0], {"formula": "mine"}, "formula must be one of"),
    ([], [], {}, "empty"),
])
def test_invalid_input_is_explained(hs, hw, kwargs, message):
    with pytest.raises(ValueError, match=message):
        selection_weights(hs, hw, **kwargs)


def test_sampling_is_deterministic_and_sorted():
    w = selection_weights(np.linspace(0.1, 2, 50), np.linspace(2, 0.1, 50))
    a, b = sample_active_set(w, seed=3), sample_active_set(w, seed=3)
    assert np.array_equal(a, b) and a.dtype == np.int64 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_active_set(w, seed=4))


def test_without_dedupe_keeps_the_draw_multiset():
    w = np.full(20, 1 / 20)
    draws = sample_active_set(w, num_draws=100, seed=0, dedupe=False)
    assert len(draws) == 100 and len(np.unique(draws)) < 100
    assert np.array_equal(np.unique(draws), sample_active_set(w, num_draws=100, seed=0, dedupe=True))


def test_uniform_weights_keep_about_63_percent():
    """n draws with replacement from n uniform items leave 1 - (1-1/n)^n ~ 1 - 1/e unique."""
    n = 20000
    unique = sample_active_set(np.full(n, 1 / n), seed=1)
    assert abs(len(unique) / n - (1 - np.exp(-1))) < 0.01


def test_zero_weight_samples_are_never_drawn():
    w = np.array([0.5, 0.0, 0.5, 0.0])
    assert set(sample_active_set(w, num_draws=1000, seed=0).tolist()) <= {0, 2}
