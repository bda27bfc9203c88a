"""Synthetic customer books with known ground truth: measuring instruments for the models.

- :mod:`.retail`: a non-contractual retail book (purchases with dropout, refunds, engagement that
  fades before a customer lapses, channels with acquisition costs) and its oracle forecast;
- :mod:`.book`: writing and reading a book (tables + truth) on disk.
"""

from features.synthetic.book import SyntheticBook, read_book, write_book
from features.synthetic.retail import ChannelSpec, SyntheticConfig, generate, oracle_expected_spend

__all__ = ["ChannelSpec", "SyntheticBook", "SyntheticConfig", "generate", "oracle_expected_spend", "read_book", "write_book"]
