"""The Phase-1 plateau check of `wmss study` (study/plateau.py)."""

import math

import pytest

from megatron_wmss.study.plateau import accuracy_standard_error, describe, plateau_check


def test_standard_error_is_binomial():
    assert accuracy_standard_error(50.0, 1000) == pytest.approx(100 * math.sqrt(0.25 / 1000))
    assert accuracy_standard_error(100.0, 1000) == 0.0


def test_flat_curve_is_a_plateau_and_a_rising_one_is_not():
    flat = {"1500": {"accuracy": 58.0, "heldout_loss": 0.0300}, "2000": {"accuracy": 58.9, "heldout_loss": 0.0290}}
    check = plateau_check(flat, 2000, 500, 1000)
    assert check["from_step"] == 1500 and check["flat"] and check["loss_change_relative"] == pytest.approx(-0.001 / 0.029)
    rising = {"1500": {"accuracy": 50.5, "heldout_loss": 0.044}, "2000": {"accuracy": 58.5, "heldout_loss": 0.026}}
    check = plateau_check(rising, 2000, 500, 1000)
    assert not check["flat"] and not check["accuracy_flat"] and not check["loss_flat"]
    assert "not flat" in describe(check) and "+8.0 points" in describe(check)


def test_loss_alone_can_break_the_plateau():
    points = {1500: {"accuracy": 58.0, "heldout_loss": 0.040}, 2000: {"accuracy": 58.0, "heldout_loss": 0.030}}
    check = plateau_check(points, 2000, 500, 1000)
    assert check["accuracy_flat"] and not check["flat"]


def test_uses_the_last_point_at_least_a_window_back():
    points = {"1000": {"accuracy": 30.0}, "1400": {"accuracy": 57.5}, "1750": {"accuracy": 58.0},
              "2000": {"accuracy": 58.2}}
    check = plateau_check(points, 2000, 500, 1000)
    assert check["from_step"] == 1400 and check["flat"] and "loss_flat" not in check


def test_no_check_without_a_point_far_enough_back():
    assert plateau_check({"1750": {"accuracy": 58.0}, "2000": {"accuracy": 58.2}}, 2000, 500, 1000) is None
    assert plateau_check({"1500": {"accuracy": 58.0}}, 2000, 500, 1000) is None
