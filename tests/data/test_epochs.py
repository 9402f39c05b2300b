"""The `auto` epoch rule (tunehouse.data.epochs): OpenAI's cookbook rule with the measured upper target."""

from __future__ import annotations

import pytest

from tunehouse.data.epochs import auto_n_epochs


@pytest.mark.parametrize(("n", "epochs"), [
    (1, 25),  # 100 // 1 = 100, capped at MAX_DEFAULT_EPOCHS
    (4, 25),
    (5, 20),  # the cookbook's toy file
    (10, 10),
    (33, 3),  # 99 < 100 -> 100 // 33 = 3
    (34, 3),
    (300, 3),
    (666, 3),  # 1998 <= 2000 (the cookbook's 25000, lowered after the WikiSQL sweep)
    (667, 2),  # 2001 > 2000 -> 2000 // 667 = 2
    (1000, 2),
    (1001, 1),
    (30_000, 1),
])
def test_auto_n_epochs_follows_the_cookbook_rule_with_the_measured_upper_target(n, epochs):
    assert auto_n_epochs(n) == epochs


def test_auto_n_epochs_needs_an_example():
    with pytest.raises(ValueError):
        auto_n_epochs(0)
