"""summary.json describes the draw it belongs to: its per-term shares are the terms of the formula the
sampler used (paper Eq. 9 or the reference code's), computed by hand here."""

from types import SimpleNamespace

import numpy as np
import pytest

from megatron_wmss.selection.summary import select_active_set
from megatron_wmss.selection.weights import selection_weights

HS = np.array([1.0, 2.0, 0.5, 3.0])
HW = np.array([2.0, 1.0, 0.5, 1.0])  # dH = -1, 1, 0, 2
IDS = ["a", "b", "c", "d"]


def _select(formula):
    cfg = SimpleNamespace(alpha=0.1, beta=0.8, gamma=0.1, selection_formula=formula, num_draws=None, dedupe=True)
    scores = {sid: {"h_strong": s, "h_weak": w} for sid, s, w in zip(IDS, HS, HW)}
    return select_active_set(scores, IDS, cfg, seed=0)


def test_paper_summary_terms_by_hand():
    selection = _select("paper")
    terms = np.array([[0.1, 0, 0, 0], [0.8, 1.6, 0.4, 2.4], [0, 0.1, 0, 0.2]])  # alpha[-dH]+, beta*Hs, gamma[dH]+
    mass = selection["summary"]["mass_per_term"]
    assert list(mass) == ["alpha[-dH]+", "beta*H_strong", "gamma[dH]+"]
    np.testing.assert_allclose(list(mass.values()), terms.sum(axis=1) / terms.sum(), rtol=1e-14)
    assert selection["summary"]["share_dominant_term"] == {"alpha[-dH]+": 0.0, "beta*H_strong": 1.0,
                                                          "gamma[dH]+": 0.0}
    np.testing.assert_array_equal(selection["weights"], selection_weights(HS, HW))


def test_reference_summary_uses_the_reference_terms():
    selection = _select("reference")
    neg, pos = np.array([1, 0, 0, 0.0]), np.array([0, 1, 0, 2.0])
    terms = np.stack([0.1 * HW / HW.sum(), 0.8 * neg / neg.sum(), 0.1 * pos / pos.sum()])
    summary = selection["summary"]
    assert summary["formula"] == "reference"
    assert list(summary["mass_per_term"]) == ["alpha*H_weak", "beta[-dH]+", "gamma[dH]+"]
    np.testing.assert_allclose(list(summary["mass_per_term"].values()), terms.sum(axis=1) / terms.sum(), rtol=1e-14)
    dominant = np.bincount(terms.argmax(axis=0), minlength=3) / 4  # a: beta, b: gamma, c: alpha, d: gamma
    assert list(summary["share_dominant_term"].values()) == pytest.approx(dominant.tolist())
    np.testing.assert_array_equal(selection["weights"], selection_weights(HS, HW, formula="reference"))
