"""The channel-weight learner: credit through provenance, bounded multiplicative updates."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from ragrec.feedback._learners import (
    ChannelCredit,
    WeightLearner,
    WeightLearnerConfig,
    event_reward,
)
from ragrec.retrieval import ChannelWeights

PRIOR = {"transition": 1.0, "ease": 0.5, "semantic": 0.3, "popularity": 0.01}


@pytest.mark.parametrize(
    ("kind", "value", "reward"),
    [
        ("like", None, 1.0),
        ("purchase", None, 1.0),
        ("click", None, 0.5),
        ("impression", None, 0.0),
        ("skip", None, -0.3),
        ("dislike", None, -1.0),
        ("rating", 5.0, 1.0),
        ("rating", 1.0, -1.0),
        ("rating", 3.0, 0.0),
        ("rating", 4.0, 0.5),
        ("rating", None, 0.0),
    ],
)
def test_event_rewards(kind: str, value: float | None, reward: float) -> None:
    assert event_reward(kind, value) == pytest.approx(reward)


def test_credit_is_split_by_inverse_rank() -> None:
    learner = WeightLearner()
    credits = learner.credits([ChannelCredit("ease", 1), ChannelCredit("semantic", 3)])
    assert credits == pytest.approx({"ease": 0.75, "semantic": 0.25})
    equal = WeightLearner(WeightLearnerConfig(rank_credit=False))
    assert equal.credits([ChannelCredit("ease", 1), ChannelCredit("semantic", 3)]) == {
        "ease": 0.5,
        "semantic": 0.5,
    }
    assert learner.credits([]) == {}


def test_a_like_moves_weight_to_the_proposing_channel_and_keeps_the_total() -> None:
    learner = WeightLearner()
    weights = ChannelWeights(PRIOR)
    after = learner.update(weights, 7, [ChannelCredit("semantic", 1)], reward=1.0)
    user = after.for_user(7)
    assert user["semantic"] > PRIOR["semantic"]
    assert user["transition"] < PRIOR["transition"]
    # the total is kept up to the floor clip (popularity sits at the floor)
    assert sum(user.values()) == pytest.approx(sum(PRIOR.values()), rel=1e-2)
    # the global prior moves too, but less
    prior = after.for_user(None)
    assert PRIOR["semantic"] < prior["semantic"] < user["semantic"]
    # other users see only the global change
    assert after.for_user(8) == prior


def test_a_dislike_moves_weight_away() -> None:
    after = WeightLearner().update(ChannelWeights(PRIOR), 7, [ChannelCredit("ease", 2)], -1.0)
    assert after.for_user(7)["ease"] < PRIOR["ease"]


def test_updates_stay_within_floor_and_cap() -> None:
    cfg = WeightLearnerConfig(learning_rate=2.0, floor=0.05, cap=2.0)
    learner = WeightLearner(cfg)
    weights = ChannelWeights(PRIOR)
    for _ in range(200):
        weights = learner.update(weights, 1, [ChannelCredit("semantic", 1)], 1.0)
    user = weights.for_user(1)
    assert max(user.values()) <= 2.0 + 1e-12
    assert min(user.values()) >= 0.05 - 1e-12
    assert user["semantic"] == pytest.approx(2.0)
    assert all(math.isfinite(w) for w in user.values())


def test_disabled_or_zero_reward_changes_nothing() -> None:
    weights = ChannelWeights(PRIOR)
    off = WeightLearner(WeightLearnerConfig(enabled=False))
    assert off.update(weights, 1, [ChannelCredit("ease", 1)], 1.0) is weights
    same = WeightLearner().update(weights, 1, [ChannelCredit("ease", 1)], 0.0)
    assert same.for_user(1) == pytest.approx(PRIOR)


def test_floor_must_be_below_cap() -> None:
    with pytest.raises(ValidationError, match="floor"):
        WeightLearnerConfig(floor=3.0, cap=2.0)
