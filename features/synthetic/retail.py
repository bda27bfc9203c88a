"""Synthetic customer books with known ground truth.

A book is a set of contract tables (transactions, events, customers) simulated from latent
per-customer parameters that are kept beside it (``truth``), so that models can be scored against
what actually drove the data and against :func:`oracle_expected_spend`, the best prediction any
model could make from the latent state.

The generative story, per customer (all rates per day):

1. Acquisition. Acquisition times follow a density that grows exponentially over the period (the
   last day sees ``acquisition_growth`` times the acquisitions of the first). Customer ids are
   assigned in acquisition order (``C0000001`` is the earliest). Each customer gets a channel, an
   acquisition cost drawn from the channel's log-normal CAC distribution, a region and an age.
   Referral-channel customers point at an earlier customer who was still active when they joined,
   chosen with probability proportional to the referrer's purchase rate.
2. Purchases (Pareto/NBD-like). A first purchase at acquisition, then a Poisson process with base
   rate ``purchase_rate_per_day`` (gamma across customers, times channel and region effects) times
   the calendar-month ``seasonality`` multiplier, until the customer drops out at ``dropout_at``.
   The lifetime is exponential with rate ``dropout_rate_per_day`` (gamma across customers, times
   channel and age effects) and is drawn even when it ends after the period.
3. Spend (Gamma-Gamma-like). Order values are gamma distributed around a customer-level
   ``mean_order_value`` (itself gamma across customers, times channel and age effects). A share of
   purchases is refunded, fully or in part, a few days later as a negative amount.
4. Engagement. While active, sessions arrive at a rate that scales with the purchase rate and email
   opens at a customer-specific share of the email send rate; some opens lead to a click. In the
   ``fade_days`` before dropout, sessions and opens fade to ``fade_floor`` of their rate
   while support tickets rise up to ``support_boost`` times their base rate. After dropout only a
   small residual share of sessions and opens remains and, for ``cancel_share`` of the customers
   who drop out within the period, a ``cancel`` event marks the dropout.

Volume with the defaults over 2021-01-01 .. 2024-12-31: about 20 transactions and 20 events per
customer (see :class:`SyntheticConfig` for the knobs that move them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import Tables
from features.synthetic._common import (
    acquisition_days,
    book_settings,
    customer_ids,
    points,
    seconds_to_datetime,
    timed_rows,
    validate_period,
    whole_seconds,
)
from features.synthetic.book import SyntheticBook

EVENT_TYPES = ("session", "email_open", "email_click", "support_ticket", "cancel")
# Lifetimes are capped so that dropout times stay inside datetime64[ns] (year 2262); a century is
# far beyond any horizon, so the cap does not move any expectation that matters.
_MAX_LIFETIME_DAYS = 36_500.0


@dataclass(frozen=True, kw_only=True)
class ChannelSpec:
    """One acquisition channel: its share of new customers, its CAC and the quality it brings.

    Parameters
    ----------
    name : str
        Channel name, as written to ``customers.channel``.
    share : float
        Share of new customers acquired through this channel (shares are normalised to sum to 1).
    cac_median : float
        Median acquisition cost, in currency units.
    cac_sigma : float
        Log-scale spread of the acquisition cost (0 = the same cost for everyone).
    rate_effect, dropout_effect, spend_effect : float
        Multipliers on the purchase rate, the dropout rate and the mean order value.
    """

    name: str
    share: float
    cac_median: float
    cac_sigma: float
    rate_effect: float = 1.0
    dropout_effect: float = 1.0
    spend_effect: float = 1.0


DEFAULT_CHANNELS = (
    ChannelSpec(name="paid_search", share=0.28, cac_median=150.0, cac_sigma=0.35),
    ChannelSpec(
        name="paid_social", share=0.22, cac_median=360.0, cac_sigma=0.5,
        rate_effect=0.75, dropout_effect=1.5, spend_effect=0.9,
    ),
    ChannelSpec(
        name="organic", share=0.18, cac_median=10.0, cac_sigma=0.6,
        rate_effect=1.1, dropout_effect=0.8, spend_effect=1.0,
    ),
    # Referral CAC is the bonus paid to the referrer: a fixed amount.
    ChannelSpec(
        name="referral", share=0.10, cac_median=20.0, cac_sigma=0.0,
        rate_effect=1.25, dropout_effect=0.6, spend_effect=1.1,
    ),
    ChannelSpec(
        name="affiliate", share=0.12, cac_median=180.0, cac_sigma=0.3,
        rate_effect=0.85, dropout_effect=1.3, spend_effect=0.85,
    ),
    ChannelSpec(
        name="email", share=0.10, cac_median=25.0, cac_sigma=0.4,
        rate_effect=1.0, dropout_effect=0.9, spend_effect=0.95,
    ),
)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Knobs of the generator. Rates are per day, money in currency units.

    Volume: transactions per customer scale with ``purchase_rate_mean`` and with the expected active
    time (longer with a lower ``dropout_rate_mean`` or a longer period); events per customer scale
    with ``session_per_purchase``, ``session_floor_rate`` and ``email_send_rate``. The defaults give
    about 20 transactions and 20 events per customer over four years.

    Parameters
    ----------
    channels : tuple of ChannelSpec
        Acquisition channels.
    acquisition_growth : float
        Acquisition volume on the last day of the period relative to the first (1 = flat).
    regions : tuple of (str, float, float)
        ``(name, share, purchase-rate effect)`` per region.
    age_mean, age_sd : float
        Age distribution (normal, rounded, clipped to 18..85 years).
    age_spend_effect, age_dropout_effect : float
        Log-multipliers per year of age above ``age_mean`` on the mean order value and dropout rate.
    purchase_rate_shape, purchase_rate_mean : float
        Gamma distribution of the base purchase rate across customers (shape; mean per day).
    dropout_rate_shape, dropout_rate_mean : float
        Gamma distribution of the dropout hazard across customers (shape; mean per day).
    order_value_mean, order_value_heterogeneity_shape, order_value_shape : float
        Mean order value across customers (gamma with the given shape around ``order_value_mean``)
        and the gamma shape of single orders around a customer's mean (higher = less spread).
    seasonality : tuple of 12 float
        Purchase-rate multiplier per calendar month, January first.
    refund_probability : float
        Probability that a purchase is refunded.
    refund_full_share : float
        Share of refunds that return the whole amount; the others return 20-80 % of it.
    refund_delay_mean_days : float
        Mean delay (exponential) from purchase to refund.
    session_per_purchase : float
        Sessions per day per unit of purchase rate while active (scaled per customer by a
        log-normal factor with spread ``session_sigma``).
    session_floor_rate : float
        Sessions per day every active customer has regardless of purchase rate.
    email_send_rate : float
        Marketing emails sent per day; each customer opens a Beta-distributed share of them.
    email_open_beta, email_click_beta : tuple of 2 float
        Beta parameters of the per-customer open and click (given open) probabilities.
    support_rate : float
        Support tickets per day of an active customer outside the fade.
    fade_days : float
        Length of the pre-dropout fade, in days.
    fade_floor : float
        Share of the session and open rates left just before dropout.
    fade_power : float
        Shape of the fade: the rates fall as ``fade_floor + (1 - fade_floor) * left ** fade_power``
        where ``left`` goes from 1 at the start of the fade to 0 at dropout (1 = linear; larger
        values drop sooner, so that disengagement shows weeks ahead).
    support_boost : float
        Support-ticket rate just before dropout, relative to ``support_rate``.
    residual_share : float
        Share of the session and open rates that remains after dropout.
    cancel_share : float
        Probability that a dropout within the period is marked by a ``cancel`` event.
    """

    channels: tuple[ChannelSpec, ...] = DEFAULT_CHANNELS
    acquisition_growth: float = 3.0
    regions: tuple[tuple[str, float, float], ...] = (
        ("north", 0.30, 1.0), ("south", 0.25, 0.9), ("east", 0.25, 1.1), ("west", 0.20, 1.0),
    )
    age_mean: float = 38.0
    age_sd: float = 13.0
    age_spend_effect: float = 0.01
    age_dropout_effect: float = -0.012
    purchase_rate_shape: float = 0.9
    purchase_rate_mean: float = 0.064
    dropout_rate_shape: float = 1.5
    dropout_rate_mean: float = 1 / 300
    order_value_mean: float = 55.0
    order_value_heterogeneity_shape: float = 3.0
    order_value_shape: float = 4.0
    seasonality: tuple[float, ...] = (0.95, 0.9, 0.95, 1.0, 1.0, 0.95, 0.95, 1.0, 1.0, 1.0, 1.25, 1.5)
    refund_probability: float = 0.04
    refund_full_share: float = 0.7
    refund_delay_mean_days: float = 6.0
    session_per_purchase: float = 0.55
    session_sigma: float = 0.5
    session_floor_rate: float = 0.01
    email_send_rate: float = 1 / 12
    email_open_beta: tuple[float, float] = (2.0, 5.0)
    email_click_beta: tuple[float, float] = (2.0, 8.0)
    support_rate: float = 1 / 600
    fade_days: float = 60.0
    fade_floor: float = 0.1
    fade_power: float = 2.0
    support_boost: float = 8.0
    residual_share: float = 0.04
    cancel_share: float = 0.3

    @property
    def expected_refund_fraction(self) -> float:
        """Expected share of a refunded order's amount that is returned."""
        return self.refund_full_share + (1 - self.refund_full_share) * 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def generate(
    n_customers: int,
    *,
    seed: int = 0,
    start: str | pd.Timestamp = "2021-01-01",
    end: str | pd.Timestamp = "2024-12-31",
    config: SyntheticConfig | None = None,
) -> SyntheticBook:
    """Simulate a customer book with known latent parameters.

    Parameters
    ----------
    n_customers : int
        Number of customers, all acquired within the period.
    seed : int
        Seed of the random generator; the same seed and settings give identical frames.
    start, end : str or Timestamp
        First and last day of the period (both inclusive); no row is dated after ``end``.
    config : SyntheticConfig, optional
        Generator knobs; the defaults when omitted.

    Returns
    -------
    SyntheticBook
        ``tables.transactions`` (customer_id, timestamp, amount) and ``tables.events``
        (customer_id, timestamp, event_type) ordered by timestamp; ``tables.customers``
        (customer_id, acquired_at, channel, acquisition_cost, referred_by, region, age) in
        acquisition order; ``truth`` indexed by customer_id with ``acquired_at``, ``channel``,
        ``region``, ``age``, ``purchase_rate_per_day`` (base rate, before seasonality),
        ``dropout_rate_per_day``, ``dropout_at`` (may lie after ``end``), ``mean_order_value``,
        ``net_order_value`` (net of expected refunds), ``session_rate_per_day``,
        ``email_open_probability``, ``email_click_probability``, ``channel_rate_effect``,
        ``channel_dropout_effect``, ``channel_spend_effect``, ``acquisition_cost``, ``cancels``
        (whether a dropout within the period emits a cancel event) and ``n_referred``.
    """
    cfg = config or SyntheticConfig()
    start_ts, end_ts = _validate(n_customers, start, end, cfg)
    n_customers = int(n_customers)
    rng = np.random.default_rng(seed)
    period_days = float((end_ts - start_ts).days + 1)
    day_season = _day_seasonality(start_ts, int(period_days), cfg.seasonality)

    cust = _draw_customers(rng, n_customers, period_days, cfg)
    tx_owner, tx_seconds, tx_amount = _draw_purchases(rng, cust, period_days, day_season, cfg)
    ev_owner, ev_seconds, ev_type = _draw_events(rng, cust, period_days, cfg)

    ids = customer_ids(n_customers)
    start_ns = start_ts.value
    transactions = timed_rows(ids, tx_owner, tx_seconds, start_ns, amount=tx_amount)
    del tx_owner, tx_seconds, tx_amount
    events = timed_rows(ids, ev_owner, ev_seconds, start_ns, event_type=(EVENT_TYPES, ev_type))
    del ev_owner, ev_seconds, ev_type

    customer_id = pd.Index(pd.array(ids, dtype="str"), name="customer_id")
    acquired_at = seconds_to_datetime(whole_seconds(cust["acq"]), start_ns)
    channel_names = np.array([c.name for c in cfg.channels], dtype=object)
    region_names = np.array([r[0] for r in cfg.regions], dtype=object)
    channel = pd.array(channel_names[cust["channel"]], dtype="str")
    region = pd.array(region_names[cust["region"]], dtype="str")
    referrer = cust["referrer"]
    # A masked index takes a null: customers not referred get a missing referred_by.
    referred_by = pd.array(ids.take(pa.array(referrer, mask=referrer < 0)), dtype="str")
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "acquired_at": acquired_at,
            "channel": channel,
            "acquisition_cost": cust["cac"],
            "referred_by": referred_by,
            "region": region,
            "age": cust["age"],
        }
    )
    truth = pd.DataFrame(
        {
            "acquired_at": acquired_at,
            "channel": channel,
            "region": region,
            "age": cust["age"],
            "purchase_rate_per_day": cust["rate"],
            "dropout_rate_per_day": cust["dropout"],
            "dropout_at": seconds_to_datetime(whole_seconds(cust["tau"]), start_ns),
            "mean_order_value": cust["aov"],
            "net_order_value": cust["aov"] * (1 - cfg.refund_probability * cfg.expected_refund_fraction),
            "session_rate_per_day": cust["session"],
            "email_open_probability": cust["open"],
            "email_click_probability": cust["click"],
            "channel_rate_effect": cust["ch_rate"],
            "channel_dropout_effect": cust["ch_dropout"],
            "channel_spend_effect": cust["ch_spend"],
            "acquisition_cost": cust["cac"],
            "cancels": cust["cancels"],
            "n_referred": np.bincount(referrer[referrer >= 0], minlength=n_customers).astype(np.int64),
        },
        index=customer_id,
    )
    truth.attrs.update(
        {
            "seasonality": list(cfg.seasonality),
            "period_start": str(start_ts.date()),
            "period_end": str(end_ts.date()),
        }
    )
    settings = book_settings(n_customers, seed, start_ts, end_ts, cfg.to_dict())
    return SyntheticBook(
        tables=Tables(transactions=transactions, events=events, customers=customers),
        truth=truth,
        settings=settings,
    )


def oracle_expected_spend(
    truth: pd.DataFrame,
    *,
    cutoff: str | pd.Timestamp,
    horizon_days: int,
) -> pd.Series:
    """Expected net spend in the label window given each customer's latent state at the cutoff.

    The oracle knows every latent parameter and whether the customer is still active at the end of
    the cutoff day, but not when an active customer will drop out: with an exponential lifetime the
    remaining lifetime is again exponential with the same rate. For an active customer

        E[spend] = rate * net_order_value
                   * integral over the window of seasonality(t) * exp(-dropout_rate * (t - t0)) dt

    where t0 is the end of the cutoff day and the window is (cutoff, cutoff + horizon_days days],
    truncated at the end of the generated period (nothing is recorded after it). A customer who has
    dropped out by t0 gets 0. Refunds are counted at the expected rate of the purchases in the
    window; refunds that cross the window edges are ignored (an effect of order refund delay /
    horizon on the refunded few percent).

    Parameters
    ----------
    truth : pandas.DataFrame
        ``SyntheticBook.truth``; its ``attrs`` must hold ``seasonality`` and ``period_end`` (kept by
        :func:`write_book` / :func:`read_book`).
    cutoff : str or Timestamp
        Cutoff date; history is everything before the end of that day.
    horizon_days : int
        Length of the label window, in days.

    Returns
    -------
    pandas.Series
        ``expected_spend`` in currency units, indexed by ``customer_id``, for the customers acquired
        by the end of the cutoff day.
    """
    missing = [k for k in ("seasonality", "period_end") if k not in truth.attrs]
    if missing:
        raise ValueError(
            f"truth.attrs lacks {missing}: pass the truth frame of a SyntheticBook (or read_book), "
            "whose attrs carry the seasonality and the period"
        )
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
    season = np.asarray(truth.attrs["seasonality"], dtype=float)
    t0 = pd.Timestamp(cutoff).normalize() + pd.Timedelta(days=1)
    period_end = pd.Timestamp(truth.attrs["period_end"]) + pd.Timedelta(days=1)
    t1 = min(t0 + pd.Timedelta(days=horizon_days), period_end)

    known = truth[truth["acquired_at"] < t0]
    alive = (known["dropout_at"] > t0).to_numpy()
    mu = known["dropout_rate_per_day"].to_numpy()[alive]
    # Integral of seasonality(t) * exp(-mu * (t - t0)) over [t0, t1), month by month (the
    # seasonality is constant within a calendar month).
    exposure = np.zeros(mu.shape)
    seg_start = t0
    while seg_start < t1:
        seg_end = min(seg_start.to_period("M").to_timestamp() + pd.offsets.MonthBegin(1), t1)
        a = (seg_start - t0) / pd.Timedelta(days=1)
        width = (seg_end - seg_start) / pd.Timedelta(days=1)
        exposure += season[seg_start.month - 1] * np.exp(-mu * a) * _expm1_ratio(mu, width)
        seg_start = seg_end

    spend = np.zeros(len(known))
    rate = known["purchase_rate_per_day"].to_numpy()[alive]
    spend[alive] = rate * known["net_order_value"].to_numpy()[alive] * exposure
    return pd.Series(spend, index=known.index, name="expected_spend")


# --------------------------------------------------------------------------------------------------
# internals: times are float64 days since the start of the period until they are written out


def _validate(n_customers, start, end, cfg: SyntheticConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    start_ts, end_ts = validate_period(n_customers, start, end)
    if len(cfg.seasonality) != 12 or min(cfg.seasonality) < 0:
        raise ValueError("seasonality must hold 12 non-negative monthly multipliers")
    if not cfg.channels or any(c.share < 0 for c in cfg.channels) or sum(c.share for c in cfg.channels) <= 0:
        raise ValueError("channels need non-negative shares with a positive sum")
    if not cfg.regions or sum(r[1] for r in cfg.regions) <= 0:
        raise ValueError("regions need non-negative shares with a positive sum")
    for name in ("refund_probability", "refund_full_share", "fade_floor", "residual_share", "cancel_share"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    positive = (
        "purchase_rate_mean", "dropout_rate_mean", "order_value_mean", "fade_days", "fade_power",
        "acquisition_growth",
    )
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.support_boost < 1:
        raise ValueError(f"support_boost must be >= 1, got {cfg.support_boost}")
    return start_ts, end_ts


def _day_seasonality(start: pd.Timestamp, n_days: int, seasonality) -> np.ndarray:
    days = np.datetime64(start.date(), "D") + np.arange(n_days)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    return np.asarray(seasonality, dtype=float)[month]


def _draw_customers(rng: np.random.Generator, n: int, period_days: float, cfg: SyntheticConfig) -> dict:
    acq = acquisition_days(rng, n, period_days, cfg.acquisition_growth)

    shares = np.array([c.share for c in cfg.channels])
    channel = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int8)
    referral = [i for i, c in enumerate(cfg.channels) if c.name == "referral"]
    if referral and channel[0] == referral[0]:
        # Nobody can refer the very first customer.
        channel[0] = next(i for i in range(len(shares)) if i != referral[0])
    ch_rate = np.array([c.rate_effect for c in cfg.channels])[channel]
    ch_dropout = np.array([c.dropout_effect for c in cfg.channels])[channel]
    ch_spend = np.array([c.spend_effect for c in cfg.channels])[channel]
    cac_median = np.array([c.cac_median for c in cfg.channels])[channel]
    cac_sigma = np.array([c.cac_sigma for c in cfg.channels])[channel]
    cac = np.round(cac_median * np.exp(cac_sigma * rng.standard_normal(n)), 2)

    region_shares = np.array([r[1] for r in cfg.regions], dtype=float)
    region = rng.choice(len(region_shares), size=n, p=region_shares / region_shares.sum()).astype(np.int8)
    region_rate = np.array([r[2] for r in cfg.regions], dtype=float)[region]
    age = np.clip(np.round(rng.normal(cfg.age_mean, cfg.age_sd, n)), 18, 85).astype(np.int64)
    age_dev = age - cfg.age_mean

    rate = rng.gamma(cfg.purchase_rate_shape, cfg.purchase_rate_mean / cfg.purchase_rate_shape, n)
    rate *= ch_rate * region_rate
    dropout = rng.gamma(cfg.dropout_rate_shape, cfg.dropout_rate_mean / cfg.dropout_rate_shape, n)
    dropout *= ch_dropout * np.exp(cfg.age_dropout_effect * age_dev)
    lifetime = np.minimum(rng.exponential(1.0, n) / dropout, _MAX_LIFETIME_DAYS)
    tau = acq + lifetime
    k = cfg.order_value_heterogeneity_shape
    aov = rng.gamma(k, cfg.order_value_mean / k, n) * ch_spend * np.exp(cfg.age_spend_effect * age_dev)

    session = cfg.session_per_purchase * rate * rng.lognormal(-cfg.session_sigma**2 / 2, cfg.session_sigma, n)
    session += cfg.session_floor_rate
    open_p = rng.beta(*cfg.email_open_beta, n)
    click_p = rng.beta(*cfg.email_click_beta, n)
    cancels = rng.random(n) < cfg.cancel_share

    referrer = np.full(n, -1, dtype=np.int64)
    if referral:
        referrer = _draw_referrers(rng, np.flatnonzero(channel == referral[0]), acq, tau, rate)

    return {
        "acq": acq, "channel": channel, "cac": cac, "region": region, "age": age,
        "rate": rate, "dropout": dropout, "tau": tau, "aov": aov,
        "session": session, "open": open_p, "click": click_p, "cancels": cancels,
        "ch_rate": ch_rate, "ch_dropout": ch_dropout, "ch_spend": ch_spend, "referrer": referrer,
    }


def _draw_referrers(rng, referees: np.ndarray, acq, tau, rate, rounds: int = 8) -> np.ndarray:
    """Earlier customers, weighted by purchase rate, preferably still active when the referee joined."""
    referrer = np.full(len(acq), -1, dtype=np.int64)
    cum = np.cumsum(rate)
    todo = referees[referees > 0]
    for _ in range(rounds):
        if not len(todo):
            break
        # Customers are in acquisition order, so index < referee index means acquired earlier
        # (ties in acquisition second are harmless: still not later).
        pick = np.searchsorted(cum, rng.random(len(todo)) * cum[todo - 1], side="right")
        pick = np.minimum(pick, todo - 1)
        referrer[todo] = pick
        todo = todo[tau[pick] <= acq[todo]]
    return referrer


def _draw_purchases(rng, cust: dict, period_days: float, day_season: np.ndarray, cfg: SyntheticConfig):
    n = len(cust["acq"])
    acq, tau, rate, aov = cust["acq"], cust["tau"], cust["rate"], cust["aov"]
    # Repeat purchases: thinning of a homogeneous process at the peak seasonal rate.
    s_max = day_season.max()
    owner, t = points(rng, rate * s_max, acq, np.minimum(tau, period_days))
    keep = rng.random(len(t)) * s_max < day_season[t.astype(np.int64)]
    owner = np.concatenate([np.arange(n, dtype=np.int32), owner[keep]])
    t = np.concatenate([acq, t[keep]])
    del keep
    shape = cfg.order_value_shape
    amount = np.round(rng.gamma(shape, 1.0, len(t)) * (aov / shape)[owner], 2)

    refunded = np.flatnonzero(rng.random(len(t)) < cfg.refund_probability)
    r_time = t[refunded] + rng.exponential(cfg.refund_delay_mean_days, len(refunded))
    in_period = r_time < period_days
    refunded, r_time = refunded[in_period], r_time[in_period]
    full = rng.random(len(refunded)) < cfg.refund_full_share
    fraction = np.where(full, 1.0, rng.uniform(0.2, 0.8, len(refunded)))
    r_amount = -np.round(amount[refunded] * fraction, 2)

    owner = np.concatenate([owner, owner[refunded]])
    seconds = whole_seconds(np.concatenate([t, r_time]), period_days)
    amount = np.concatenate([amount, r_amount])
    return owner, seconds, amount


def _draw_events(rng, cust: dict, period_days: float, cfg: SyntheticConfig):
    acq, tau = cust["acq"], cust["tau"]
    end = np.full(len(acq), period_days)
    fade_start = np.clip(tau - cfg.fade_days, acq, end)
    active_end = np.minimum(tau, end)
    dead_start = np.minimum(np.maximum(tau, acq), end)
    open_rate = cfg.email_send_rate * cust["open"]

    owners, times, types = [], [], []

    def add(owner, t, code):
        owners.append(owner.astype(np.int32, copy=False))
        times.append(t)
        types.append(np.full(len(t), code, dtype=np.int8))

    def fading(rate, code):
        # Active before the fade at the full rate; inside it the rate falls to fade_floor.
        add(*points(rng, rate, acq, fade_start), code)
        o, t = points(rng, rate, fade_start, active_end)
        left = (tau[o] - t) / cfg.fade_days  # 1 at the start of the fade, 0 at dropout
        keep = rng.random(len(t)) < cfg.fade_floor + (1 - cfg.fade_floor) * left**cfg.fade_power
        add(o[keep], t[keep], code)
        add(*points(rng, cfg.residual_share * rate, dead_start, end), code)

    fading(cust["session"], 0)
    n_before = len(times)
    fading(open_rate, 1)
    # Clicks follow a share of opens within minutes.
    o = np.concatenate(owners[n_before:])
    t = np.concatenate(times[n_before:])
    clicked = rng.random(len(t)) < cust["click"][o]
    t_click = t[clicked] + rng.exponential(10 / 1440, int(clicked.sum()))
    in_period = t_click < period_days
    add(o[clicked][in_period], t_click[in_period], 2)
    del o, t, clicked, t_click

    # Support tickets: base rate while active, rising linearly to support_boost x at dropout.
    support = np.full(len(acq), cfg.support_rate)
    add(*points(rng, support, acq, fade_start), 3)
    o, t = points(rng, support * cfg.support_boost, fade_start, active_end)
    mult = 1 + (cfg.support_boost - 1) * (1 - (tau[o] - t) / cfg.fade_days)
    keep = rng.random(len(t)) * cfg.support_boost < mult
    add(o[keep], t[keep], 3)

    cancel = np.flatnonzero(cust["cancels"] & (tau < period_days))
    add(cancel, tau[cancel], 4)

    owner = np.concatenate(owners)
    seconds = whole_seconds(np.concatenate(times), period_days)
    code = np.concatenate(types)
    return owner, seconds, code


def _expm1_ratio(mu: np.ndarray, width: float) -> np.ndarray:
    """(1 - exp(-mu * width)) / mu, the exposure of a width-day segment; width as mu -> 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.expm1(-mu * width) / mu
    return np.where(mu > 1e-12, out, width)
