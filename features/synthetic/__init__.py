"""Synthetic customer books with known ground truth: measuring instruments for the models.

- :mod:`.retail`: a non-contractual retail book (purchases with dropout, refunds, engagement that
  fades before a customer lapses, channels with acquisition costs) and its oracle forecast;
- :mod:`.subscription`: a subscription (SaaS) book (monthly invoices, plan changes, cancels with a
  tenure-dependent hazard, reactivations, engagement) and its exact churn, spend and CLV truth;
- :mod:`.book`: writing and reading a book (tables + truth) on disk.
"""

from features.synthetic.book import SyntheticBook, read_book, write_book
from features.synthetic.retail import ChannelSpec, SyntheticConfig, generate, oracle_expected_spend
from features.synthetic.subscription import (
    CompanySize,
    PlanSpec,
    SubscriptionChannel,
    SubscriptionConfig,
    SubscriptionTruth,
    generate_subscription,
    new_customer_truth,
    subscription_truth,
)

__all__ = [
    "ChannelSpec",
    "CompanySize",
    "PlanSpec",
    "SubscriptionChannel",
    "SubscriptionConfig",
    "SubscriptionTruth",
    "SyntheticBook",
    "SyntheticConfig",
    "generate",
    "generate_subscription",
    "new_customer_truth",
    "oracle_expected_spend",
    "read_book",
    "subscription_truth",
    "write_book",
]
