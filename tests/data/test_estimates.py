"""Estimates: time from the throughput file, price from the price file, guidance."""

from __future__ import annotations

import pytest

from tunehouse.data.epochs import auto_n_epochs
from tunehouse.data.estimates import (
    estimate_training,
    load_prices,
    overfit_risk,
    size_guidance,
    throughput_for,
)


def test_prices_come_from_the_dated_data_file():
    prices = load_prices()
    assert prices["checked"] and prices["source"].startswith("https://openai.com")
    assert prices["per_million_training_tokens"]["gpt-4o-mini-2024-07-18"] == 3.00


def test_throughput_falls_back_to_the_first_entry_for_unknown_models():
    assert throughput_for("gemma-3-270m", "cpu")["tokens_per_second"] > 0
    assert throughput_for("no-such-model", "cuda") == throughput_for("gemma-3-270m", "cpu")


def test_estimate_arithmetic():
    est = estimate_training(n_examples=500, tokens_per_epoch=100_000, supervised_tokens_per_epoch=20_000,
                            model="gemma-3-270m", device="cpu")
    tps = throughput_for("gemma-3-270m", "cpu")["tokens_per_second"]
    assert est["n_epochs"] == 3 and est["total_tokens"] == 300_000 and est["supervised_tokens"] == 60_000
    assert est["training_seconds"] == pytest.approx(300_000 / tps, abs=0.1)
    for model, usd in load_prices()["per_million_training_tokens"].items():
        assert est["openai_cost_usd"][model] == pytest.approx(0.3 * usd)


def test_explicit_epochs_override_auto():
    assert estimate_training(1000, 10, 5, n_epochs=7)["total_tokens"] == 70


@pytest.mark.parametrize(("n", "statuses"), [
    (40, ["below_minimum"] * 4),
    (60, ["minimum", "below_minimum", "below_minimum", "below_minimum"]),
    (300, ["recommended", "recommended", "below_minimum", "below_minimum"]),
    (1000, ["recommended", "recommended", "recommended", "minimum"]),
    (5000, ["recommended"] * 4),
])
def test_size_guidance(n, statuses):
    guidance = size_guidance(n)
    assert [g["goal"] for g in guidance] == ["format", "style", "domain", "complex"]
    assert [g["status"] for g in guidance] == statuses


def test_auto_estimate_says_when_it_stops_early_and_what_it_holds_out():
    held = estimate_training(600, 60_000, 12_000)
    assert (held["early_stopping"], held["holdout_examples"], held["n_epochs"]) == (True, 30, 3)
    large = estimate_training(1000, 100_000, 20_000)
    assert (large["early_stopping"], large["holdout_examples"], large["n_epochs"]) == (False, 0, 2)
    with_file = estimate_training(1000, 100_000, 20_000, has_validation_file=True)
    assert (with_file["early_stopping"], with_file["holdout_examples"]) == (True, 0)
    small = estimate_training(50, 1000, 200)
    assert (small["early_stopping"], small["holdout_examples"], small["n_epochs"]) == (False, 0, 3)
    explicit = estimate_training(1000, 100_000, 20_000, n_epochs=2)
    assert (explicit["early_stopping"], explicit["holdout_examples"]) == (False, 0)


def test_auto_epochs_follow_the_examples_left_after_the_holdout():
    # 666 examples: 3 epochs, so 33 are held out and the 633 left get 3; 667 get 2 epochs and keep every example.
    assert estimate_training(666, 10, 5)["n_epochs"] == auto_n_epochs(633) == 3
    assert auto_n_epochs(667) == 2 and estimate_training(667, 10, 5)["holdout_examples"] == 0


@pytest.mark.parametrize(("n", "epochs", "warns"), [(1000, 2, False), (1000, 3, True), (30, 3, False),
                                                    (30, 4, True), (10_000, 2, True), (10_000, 1, False)])
def test_overfit_risk_is_more_epochs_than_the_auto_rule(n, epochs, warns):
    message = overfit_risk(n, epochs)
    assert (message is not None) == warns
    if warns:
        assert f"n_epochs={epochs}" in message and f"{auto_n_epochs(n)} epoch(s)" in message
