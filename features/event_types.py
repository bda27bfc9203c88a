"""Event types of a book beyond the configured ones: reported, and the usable ones taken in.

The engagement features (:mod:`features.families.engagement`) count the event types of
``features.event_types``; the columns depend on the configuration only, never on a batch. A book
may hold other types (a SaaS book's ``login``, ``upgrade``): rather than ignore them without a
word, a training run reads the history up to its cutoff once (:func:`resolve_event_types`):

- a type is **usable** when its name is lower-case snake case (``[a-z][a-z0-9_]*``, at most 40
  characters: the names of its feature columns stay readable and safe) and at least
  :data:`MIN_CUSTOMERS` customers have one; with ``features.event_types_from_data`` (the default)
  the usable types are appended to ``event_types`` in order of frequency, and the run's feature
  set (stored with its models) then holds them;
- the others are **ignored**, and reported with their counts.

A book whose events are all of configured types keeps its configuration (and its features) as
they were. Everything is a pure function of the rows dated before the end of the cutoff day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from features.config import FeatureConfig
from features.dates import parse_cutoff

__all__ = ["MIN_CUSTOMERS", "EventTypeReport", "resolve_event_types"]

#: Customers that must have an event of a type before it becomes a feature.
MIN_CUSTOMERS = 10
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class EventTypeReport:
    """What :func:`resolve_event_types` found among the events not of a configured type.

    Attributes
    ----------
    unknown_events : int
        Events (before the end of the cutoff day) whose type is not in the configured ``event_types``.
    added : dict of str to int
        Usable types appended to ``event_types``, with their event counts.
    ignored : dict of str to int
        Types left out (a name that is not lower-case snake case, fewer than :data:`MIN_CUSTOMERS`
        customers, or ``event_types_from_data`` off), with their event counts.
    """

    unknown_events: int
    added: dict[str, int]
    ignored: dict[str, int]

    def message(self) -> str:
        """One line for the log and the feature summary; empty without unknown events."""
        if not self.unknown_events:
            return ""
        parts = [f"{self.unknown_events:,} event(s) of types not in features.event_types"]
        if self.added:
            parts.append("taken into the engagement features: " + ", ".join(f"{k} ({v:,})" for k, v in self.added.items()))
        if self.ignored:
            parts.append("ignored: " + ", ".join(f"{k!r} ({v:,})" for k, v in self.ignored.items()))
        return "; ".join(parts)

    def tags(self) -> dict[str, str]:
        """The report as MLflow tags (strings)."""
        return {
            "unknown_events": str(self.unknown_events),
            "event_types_added": ",".join(self.added),
            "event_types_ignored": ",".join(f"{k}:{v}" for k, v in self.ignored.items()),
        }


def resolve_event_types(
    config: FeatureConfig, events: pd.DataFrame | None, *, cutoff
) -> tuple[FeatureConfig, EventTypeReport]:
    """The feature settings with the usable event types of the history appended, and the report.

    Parameters
    ----------
    config : FeatureConfig
    events : pandas.DataFrame or None
        The ``events`` table (``customer_id``, ``timestamp``, ``event_type``; normalised dtypes).
    cutoff : date-like
        Only events before the end of this day are read.

    Returns
    -------
    config : FeatureConfig
        ``config`` itself when nothing is added, else a copy whose ``event_types`` end with the
        added types (most events first, then by name).
    report : EventTypeReport
    """
    empty = EventTypeReport(0, {}, {})
    if events is None or not len(events) or "event_type" not in events.columns:
        return config, empty
    end = pd.Timestamp(parse_cutoff(cutoff)) + pd.Timedelta(days=1)
    seen = events.loc[(events["timestamp"] < end).to_numpy(), ["customer_id", "event_type"]]
    seen = seen.loc[~seen["event_type"].isin(config.event_types).to_numpy()]
    if not len(seen):
        return config, empty
    per_type = seen.groupby("event_type", observed=True).agg(events=("customer_id", "size"),
                                                             customers=("customer_id", "nunique"))
    per_type = per_type.reset_index().sort_values(["events", "event_type"], ascending=[False, True])
    added, ignored = {}, {}
    for name, n_events, n_customers in per_type[["event_type", "events", "customers"]].itertuples(index=False):
        usable = config.event_types_from_data and _NAME.fullmatch(str(name)) and n_customers >= MIN_CUSTOMERS
        (added if usable else ignored)[str(name)] = int(n_events)
    report = EventTypeReport(int(len(seen)), added, ignored)
    if not added:
        return config, report
    return config.model_copy(update={"event_types": (*config.event_types, *added)}), report
