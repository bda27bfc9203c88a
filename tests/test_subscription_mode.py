"""Subscription mode in the configuration: ``business: subscription`` and its section."""

from __future__ import annotations

import pytest

from training.config import ConfigError, load_config


def test_retail_is_the_default_and_subscription_churns_by_cancelling(tmp_path):
    assert load_config(environ={}).business == "retail"
    assert load_config(environ={}).training.churn_definition == "purchase"
    path = tmp_path / "config.yaml"
    path.write_text("business: subscription\nsubscription:\n  plans: {starter: 29, growth: 79}\n  billing_months: 1\n")
    config = load_config(path, environ={})
    assert config.business == "subscription" and config.training.churn_definition == "cancel"
    assert config.subscription.plans == {"starter": 29.0, "growth": 79.0}
    assert config.to_flat_dict()["business"] == "subscription"


def test_business_from_the_environment_and_flags():
    assert load_config(environ={"CLVCAST_BUSINESS": "subscription"}).business == "subscription"
    assert load_config(environ={"CLVCAST_BUSINESS": "subscription"}, business="retail").business == "retail"
    assert load_config(environ={}, billing_months=12).subscription.billing_months == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"business": "wholesale"}, "config business"),
        ({"business": "subscription", "churn_definition": "purchase"}, "churn_definition must be 'cancel'"),
        ({"subscription__segment_by": ["plan", "size"]}, "config subscription.segment_by"),
        ({"billing_months": 0}, "config subscription.billing_months"),
    ],
)
def test_bad_subscription_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={}, **overrides)
