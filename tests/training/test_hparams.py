"""The `auto` hyperparameter rules and the learning-rate schedule."""

from __future__ import annotations

import pytest

from tunehouse.training import hparams


@pytest.mark.parametrize(
    ("n", "epochs"), [(10, 10), (30, 3), (34, 3), (300, 3), (666, 3), (667, 2), (1000, 2), (1001, 1), (10000, 1),
                      (2, 25)]
)
def test_auto_epochs_follow_the_cookbook_rule_with_the_measured_upper_target(n, epochs):
    assert hparams.auto_n_epochs(n) == epochs


@pytest.mark.parametrize(("n", "bs"), [(10, 1), (199, 1), (200, 2), (1000, 8), (1700, 16), (100000, 32)])
def test_auto_batch_size(n, bs):
    assert hparams.auto_batch_size(n) == bs


def test_auto_learning_rate_is_the_sweeps_best_on_the_calibrated_base():
    # The base rate stays what explicit multipliers are multiples of; auto is 5e-4 at every batch size.
    assert hparams.BASE_LEARNING_RATE == 2e-4
    assert hparams.auto_learning_rate_multiplier(1) == hparams.auto_learning_rate_multiplier(32) == 2.5
    hp = hparams.resolve_hyperparameters(1000, "auto", "auto", "auto")
    assert hp == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 2.5}


def test_explicit_values_are_kept_and_batch_clamped_to_the_data():
    hp = hparams.resolve_hyperparameters(5, 2, 16, 0.5)
    assert hp == {"n_epochs": 2, "batch_size": 5, "learning_rate_multiplier": 0.5}


def test_non_positive_values_are_rejected():
    with pytest.raises(ValueError, match="must be positive"):
        hparams.resolve_hyperparameters(100, 0, 4, 1.0)


def test_schedule_warms_up_then_decays_to_a_tenth():
    peak, total = 1.0, 100
    lrs = [hparams.lr_at(s, total, peak) for s in range(total)]
    warmup = round(hparams.WARMUP_FRACTION * total)
    assert lrs[0] < lrs[warmup - 1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_dpo_auto_adds_beta_and_its_own_rate_supervised_keeps_its_own():
    dpo = hparams.resolve_hyperparameters(66, "auto", "auto", "auto", method="dpo")
    assert dpo == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": hparams.DPO_LEARNING_RATE_MULTIPLIER,
                   "beta": hparams.DPO_BETA}
    assert hparams.DPO_LEARNING_RATE_MULTIPLIER < 1  # the sweep: the SFT rate pushes preferred answers down
    sft = hparams.resolve_hyperparameters(66, "auto", "auto", "auto")
    assert "beta" not in sft and sft["learning_rate_multiplier"] == hparams.AUTO_LEARNING_RATE_MULTIPLIER
    assert hparams.resolve_hyperparameters(66, 1, 2, 0.1, method="dpo", beta=2)["beta"] == 2
