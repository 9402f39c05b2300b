"""The validation plan of `n_epochs: auto`: one test per rule of tunehouse.data.holdout."""

from __future__ import annotations

import pytest

from tunehouse.data.holdout import holdout_indices, holdout_size, validation_plan


@pytest.mark.parametrize(("n", "k"), [(199, 0), (200, 10), (300, 15), (666, 33)])
def test_holdout_is_5_percent_and_at_least_10_from_200_examples(n, k):
    assert holdout_size(n) == k


def test_holdout_indices_are_seeded_and_sorted():
    a, b = holdout_indices(1000, seed=0), holdout_indices(1000, seed=1)
    assert a == holdout_indices(1000, seed=0) and a != b
    assert len(a) == len(set(a)) == 50 and a == sorted(a) and 0 <= a[0] and a[-1] < 1000
    assert holdout_indices(100, seed=0) == []


def test_explicit_epochs_are_never_validation_driven():
    assert validation_plan(1000, False, True, "supervised") == {"early_stopping": False, "holdout_examples": 0}


def test_dpo_is_never_validation_driven():
    assert validation_plan(1000, True, True, "dpo") == {"early_stopping": False, "holdout_examples": 0}


def test_a_validation_file_drives_auto_without_holdout():
    assert validation_plan(20, True, True, "supervised") == {"early_stopping": True, "holdout_examples": 0}


def test_without_a_validation_file_auto_holds_out_only_from_files_of_200_examples_or_more():
    assert validation_plan(600, True, False, "supervised") == {"early_stopping": True, "holdout_examples": 30}
    assert validation_plan(150, True, False, "supervised") == {"early_stopping": False, "holdout_examples": 0}


def test_without_a_validation_file_auto_holds_out_only_when_it_runs_3_epochs_or_more():
    assert validation_plan(1000, True, False, "supervised") == {"early_stopping": False, "holdout_examples": 0}
    assert validation_plan(1000, True, True, "supervised") == {"early_stopping": True, "holdout_examples": 0}
