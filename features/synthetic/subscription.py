"""A synthetic subscription (SaaS) book with known ground truth.

A contractual counterpart of :mod:`features.synthetic.retail`: customers subscribe to one of a few
monthly plans, are invoiced every month on their signup day, move between plans, cancel, and a few
come back. The latent per-customer parameters are kept in ``truth`` so that the churn, spend and
CLV that a model predicts can be scored against :func:`subscription_truth`, the exact expectation
given each customer's parameters and observable state at a cutoff.

Time is measured in billing months on each customer's own calendar: month ``j`` of a customer runs
from the ``j``-th monthly anniversary of the signup to the next one. An anniversary falls on the
signup's day of month, clipped to the last day of shorter months (a signup on 31 January bills on
28/29 February and 31 March), at the signup's time of day. Within a billing month, a time is a
fraction of that month (0 at its start, 1 at the next anniversary). Monthly rates are per billing
month.

The generative story, per customer:

1. Acquisition. Signup times follow a density that grows exponentially over the period (the last
   day sees ``acquisition_growth`` times the signups of the first); customer ids follow signup order
   (``C0000001`` is the earliest). Each customer gets a channel (shares ``channel.share``), an
   acquisition cost drawn from the channel's log-normal CAC (median ``cac_median``, growing by
   ``cac_growth_per_year`` per year since the start of the period, log-scale spread ``cac_sigma``),
   a company size, and a signup plan with probability proportional to
   ``channel.plan_mix[p] * size.plan_tilt ** p`` (plans ordered by price, ``p = 0`` the cheapest).
2. Billing. A subscription invoices the price of its current plan on the first day of every
   billing month, starting at signup (the first invoice is at ``acquired_at``), so the
   transactions table is the invoice history. There is no annual billing and no proration.
3. Plan changes. Once per billing month the customer upgrades one plan with probability
   ``expansion_rate`` (if a dearer plan exists) or, if it did not, downgrades one plan with
   probability ``contraction_rate`` (if a cheaper plan exists): a Markov chain with per-customer
   rates (Beta distributions across customers). The change happens at a uniform time within the
   month (an ``upgrade`` or ``downgrade`` event) and applies from the next invoice; a change drawn
   after a cancel within the same month does not happen, one drawn before a cancel is recorded but
   never billed.
4. Cancellation. Within billing month ``k`` of a subscription (``k = 0`` the first), the customer
   cancels at the constant rate

       h = hazard_base * frailty * plan.hazard_effect * channel.hazard_effect
           * size.hazard_effect * (1 + min(k, hazard_decay_months)) ** (-hazard_decay)

   per billing month, so the month is survived with probability ``exp(-h)``. ``frailty`` is
   gamma-distributed with mean 1 and shape ``frailty_shape``; the plan is the one billed that month.
   The hazard falls with tenure until ``hazard_decay_months`` and is constant afterwards, so that
   lifetimes have a geometric tail (finite expectations, tails summed in closed form). A cancel is
   a ``cancel`` event; the customer keeps access to the end of the paid month, gets no further
   invoice and is then churned.
5. Reactivation. At each churn the customer is, with probability ``reactivation_share``, one who
   will come back; such a customer resubscribes at each later anniversary of the old billing day
   with probability ``reactivation_rate`` (so the first return is at least two anniversaries after
   the last invoice, after a geometric gap of mean ``1 / reactivation_rate`` months from the churn).
   The new subscription invoices the plan held at the churn, restarts its tenure at 0 (a new
   subscription's high hazard) and can end and come back again the same way.
6. Engagement (``events``). While a customer has access, ``login`` events arrive as a Poisson process
   at a per-customer rate (gamma across customers, times the plan's ``login_effect``, times
   ``frailty ** -login_frailty_elasticity`` normalised to mean 1: frail customers log in less). In the
   ``fade_days`` before a cancel, the login rate falls to ``fade_floor`` of itself as
   ``fade_floor + (1 - fade_floor) * left ** fade_power`` (``left`` from 1 at the start of the fade to
   0 at the cancel) while ``support_ticket`` events rise linearly from their base rate to
   ``support_boost`` times it; between a cancel and the end of access logins continue at
   ``post_cancel_login_share`` of the rate and no tickets are filed. The path is simulated
   ``fade_days`` beyond the period so that a cancel just after the end fades the logins before it.

Volume with the defaults over 2021-01-01 .. 2024-12-31: about 13.4 invoices and 38.5 events per
customer (12,000 customers, seed 0), 89 % of the events logins.

What the defaults give, measured on ``generate_subscription(12_000, seed=0)`` with
``subscription_truth(book, cutoff="2023-12-31", horizon_days=182)`` and
``new_customer_truth(book, acquired_at="2023-12-31")``: of the 4,858 customers subscribed and not
cancelled at the cutoff, the mean true P(cancel within 182 days) is 0.142 (realised 0.140, standard
error 0.005); by tenure of the running subscription (billing months 0-2 / 3-11 / 12-23 / 24+) it is
0.31 / 0.22 / 0.16 / 0.12 on starter, 0.23 / 0.16 / 0.12 / 0.10 on growth and
0.13 / 0.10 / 0.07 / 0.06 on scale. True LTV:CAC of a customer acquired on 2023-12-31 (margin 0.8,
10 % a year): paid_social 0.79, paid_search 2.05, partner 4.07, referral 50, organic 59 (standard
errors below 1 % of each).

Ground truth. :func:`subscription_truth` conditions on each customer's latent parameters and on the
billing state observable at the cutoff (current plan, tenure, a cancel or plan change in the current
billing month, months since a churn), never on the realised future. Engagement is drawn from the
future cancel date (it fades *before* a cancel), so a model that reads recent logins can rank
imminent cancels better than this truth; the truth is the expectation over everything the state
does not reveal. :func:`new_customer_truth` gives the same figures for a customer not yet acquired,
averaged over the population of a channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

from features.contract import Tables
from features.synthetic.book import SyntheticBook
# The retail generator's row helpers (ids, Poisson points, time order) are shared, not copied.
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

__all__ = [
    "CompanySize",
    "PlanSpec",
    "STATES",
    "SUBSCRIPTION_EVENT_TYPES",
    "SubscriptionChannel",
    "SubscriptionConfig",
    "SubscriptionTruth",
    "generate_subscription",
    "new_customer_truth",
    "subscription_truth",
]

SUBSCRIPTION_EVENT_TYPES = ("login", "support_ticket", "upgrade", "downgrade", "cancel")
STATES = ("active", "reactivated", "cancelled", "churned")
_SUB, _WAITING, _GONE = 0, 1, 2  # simulation states: subscribed, returner not back yet, gone for good
_DAY_S = 86_400
# Mean Gregorian month, used only where a billing calendar is not followed month by month (the
# lifetime tail beyond the explicit months, see subscription_truth).
_MEAN_MONTH_DAYS = 365.2425 / 12


@dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """One plan of the price list.

    Parameters
    ----------
    name : str
        Plan name, as written to ``customers.plan``.
    price : float
        Monthly invoice amount, in currency units. Plans are ordered by price.
    hazard_effect : float
        Multiplier on the cancel hazard of a month billed on this plan.
    login_effect : float
        Multiplier on the login rate of a customer who signed up on this plan.
    """

    name: str
    price: float
    hazard_effect: float = 1.0
    login_effect: float = 1.0


@dataclass(frozen=True, kw_only=True)
class SubscriptionChannel:
    """One acquisition channel: its share of signups, its CAC, its plan mix and its churn.

    Parameters
    ----------
    name : str
        Channel name, as written to ``customers.channel``.
    share : float
        Share of signups through this channel (shares are normalised to sum to 1).
    cac_median : float
        Median acquisition cost at the start of the period, in currency units.
    cac_sigma : float
        Log-scale spread of the acquisition cost (0 = the same cost for everyone).
    plan_mix : tuple of float
        Relative weight of each plan at signup, cheapest first (before the company-size tilt).
    hazard_effect : float
        Multiplier on the cancel hazard.
    cac_growth_per_year : float
        Yearly growth of the median CAC (0.1 = 10 % dearer every year).
    """

    name: str
    share: float
    cac_median: float
    cac_sigma: float
    plan_mix: tuple[float, ...]
    hazard_effect: float = 1.0
    cac_growth_per_year: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CompanySize:
    """One company-size band of the customers.

    Parameters
    ----------
    name : str
        Band name, as written to ``customers.company_size``.
    share : float
        Share of customers in the band (normalised to sum to 1).
    plan_tilt : float
        Odds multiplier per plan step up at signup (larger companies buy dearer plans).
    hazard_effect : float
        Multiplier on the cancel hazard.
    """

    name: str
    share: float
    plan_tilt: float = 1.0
    hazard_effect: float = 1.0


DEFAULT_PLANS = (
    PlanSpec(name="starter", price=29.0, hazard_effect=1.3, login_effect=0.8),
    PlanSpec(name="growth", price=79.0, hazard_effect=1.0, login_effect=1.0),
    PlanSpec(name="scale", price=199.0, hazard_effect=0.55, login_effect=1.3),
)

DEFAULT_CHANNELS = (
    SubscriptionChannel(
        name="paid_search", share=0.30, cac_median=1400.0, cac_sigma=0.35,
        plan_mix=(0.50, 0.35, 0.15), hazard_effect=1.0, cac_growth_per_year=0.06,
    ),
    SubscriptionChannel(
        name="paid_social", share=0.22, cac_median=1900.0, cac_sigma=0.5,
        plan_mix=(0.65, 0.28, 0.07), hazard_effect=1.5, cac_growth_per_year=0.08,
    ),
    SubscriptionChannel(
        name="organic", share=0.25, cac_median=60.0, cac_sigma=0.6,
        plan_mix=(0.45, 0.37, 0.18), hazard_effect=0.85,
    ),
    # Referral CAC is the bonus paid to the referrer: a fixed amount.
    SubscriptionChannel(
        name="referral", share=0.10, cac_median=100.0, cac_sigma=0.0,
        plan_mix=(0.40, 0.40, 0.20), hazard_effect=0.7,
    ),
    SubscriptionChannel(
        name="partner", share=0.13, cac_median=1200.0, cac_sigma=0.3,
        plan_mix=(0.20, 0.45, 0.35), hazard_effect=0.75, cac_growth_per_year=0.03,
    ),
)

DEFAULT_COMPANY_SIZES = (
    CompanySize(name="1-10", share=0.45, plan_tilt=1.0, hazard_effect=1.15),
    CompanySize(name="11-50", share=0.30, plan_tilt=1.6, hazard_effect=1.0),
    CompanySize(name="51-200", share=0.17, plan_tilt=2.5, hazard_effect=0.85),
    CompanySize(name="201+", share=0.08, plan_tilt=4.0, hazard_effect=0.7),
)


@dataclass(frozen=True, kw_only=True)
class SubscriptionConfig:
    """Knobs of the subscription generator. Money in currency units; see the module docstring.

    Parameters
    ----------
    plans : tuple of PlanSpec
        The price list, cheapest first (prices strictly increasing).
    channels : tuple of SubscriptionChannel
        Acquisition channels; each ``plan_mix`` has one weight per plan.
    company_sizes : tuple of CompanySize
        Company-size bands.
    acquisition_growth : float
        Signups on the last day of the period relative to the first (1 = flat).
    hazard_base : float
        Monthly cancel hazard of a first month for frailty 1 and all effects 1.
    hazard_decay : float
        Exponent of the tenure decay ``(1 + k) ** -hazard_decay`` of the hazard (0 = none).
    hazard_decay_months : int
        Tenure (billing months) after which the hazard stops falling.
    frailty_shape : float
        Shape of the gamma frailty (mean 1; larger = less heterogeneity).
    expansion_mean, expansion_concentration : float
        Beta distribution of the monthly upgrade probability across customers: mean and
        concentration (the Beta's ``a + b``). A mean of 0 switches upgrades off.
    contraction_mean, contraction_concentration : float
        The same for the monthly downgrade probability.
    reactivation_share : float
        Probability that a churned customer will ever come back.
    reactivation_rate : float
        Monthly probability that a customer who will come back does so at the next anniversary.
    login_rate_mean, login_rate_shape : float
        Gamma distribution of the base login rate across customers (mean per day; shape).
    login_frailty_elasticity : float
        The login rate scales as ``frailty ** -login_frailty_elasticity`` (normalised to mean 1);
        must be below ``frailty_shape`` for that mean to exist.
    support_rate_mean, support_rate_shape : float
        Gamma distribution of the base support-ticket rate (mean per day; shape).
    fade_days : float
        Length of the pre-cancel fade, in days.
    fade_floor : float
        Share of the login rate left just before a cancel.
    fade_power : float
        Shape of the fade (1 = linear; larger values fall earlier).
    support_boost : float
        Support-ticket rate just before a cancel relative to the base rate (>= 1).
    post_cancel_login_share : float
        Share of the login rate between a cancel and the end of access.
    """

    plans: tuple[PlanSpec, ...] = DEFAULT_PLANS
    channels: tuple[SubscriptionChannel, ...] = DEFAULT_CHANNELS
    company_sizes: tuple[CompanySize, ...] = DEFAULT_COMPANY_SIZES
    acquisition_growth: float = 3.0
    hazard_base: float = 0.08
    hazard_decay: float = 0.35
    hazard_decay_months: int = 24
    frailty_shape: float = 3.0
    expansion_mean: float = 0.02
    expansion_concentration: float = 40.0
    contraction_mean: float = 0.01
    contraction_concentration: float = 40.0
    reactivation_share: float = 0.12
    reactivation_rate: float = 0.15
    login_rate_mean: float = 0.08
    login_rate_shape: float = 1.5
    login_frailty_elasticity: float = 0.5
    support_rate_mean: float = 1 / 120
    support_rate_shape: float = 2.0
    fade_days: float = 45.0
    fade_floor: float = 0.15
    fade_power: float = 2.0
    support_boost: float = 6.0
    post_cancel_login_share: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> SubscriptionConfig:
        """Rebuild a config from :meth:`to_dict` output, also after a JSON round trip.

        Parameters
        ----------
        settings : dict
            Field values; nested plans, channels and sizes as dicts, tuples possibly as lists.

        Returns
        -------
        SubscriptionConfig
        """
        values = dict(settings)
        values["plans"] = tuple(PlanSpec(**p) for p in values["plans"])
        values["channels"] = tuple(
            SubscriptionChannel(**{**c, "plan_mix": tuple(c["plan_mix"])}) for c in values["channels"]
        )
        values["company_sizes"] = tuple(CompanySize(**s) for s in values["company_sizes"])
        return cls(**values)


@dataclass(frozen=True)
class SubscriptionTruth:
    """The ground truth of a subscription book at a cutoff (see :func:`subscription_truth`).

    Attributes
    ----------
    customers : pandas.DataFrame
        One row per customer acquired by the cutoff, indexed by ``customer_id``.
    revenue_by_month : pandas.DataFrame
        Expected invoice amount at each customer's ``i``-th billing anniversary after the cutoff,
        columns ``i = 1 .. max_months``, same index.
    paying_by_month : pandas.DataFrame
        Probability that an invoice is issued at that anniversary (the survival curve of paying,
        reactivations included); ``revenue_by_month / paying_by_month`` is the expected MRR of a
        paying customer.
    settings : dict
        ``cutoff``, ``horizon_days``, ``gross_margin``, ``annual_discount_rate``, ``max_months``.
    """

    customers: pd.DataFrame
    revenue_by_month: pd.DataFrame
    paying_by_month: pd.DataFrame
    settings: dict


def generate_subscription(
    n_customers: int,
    *,
    seed: int = 0,
    start: str | pd.Timestamp = "2021-01-01",
    end: str | pd.Timestamp = "2024-12-31",
    config: SubscriptionConfig | None = None,
) -> SyntheticBook:
    """Simulate a subscription book with known latent parameters.

    Parameters
    ----------
    n_customers : int
        Number of customers, all acquired within the period.
    seed : int
        Seed of the random generator; the same seed and settings give identical frames.
    start, end : str or Timestamp
        First and last day of the period (both inclusive); no row is dated after ``end``.
    config : SubscriptionConfig, optional
        Generator knobs; the defaults when omitted.

    Returns
    -------
    SyntheticBook
        ``tables.transactions`` (customer_id, timestamp, amount: one row per monthly invoice) and
        ``tables.events`` (customer_id, timestamp, event_type in :data:`SUBSCRIPTION_EVENT_TYPES`),
        both in time order; ``tables.customers`` (customer_id, acquired_at, channel,
        acquisition_cost, plan: the signup plan, company_size) in signup order. ``truth`` is
        indexed by customer_id with ``acquired_at``, ``channel``, ``company_size``, ``plan``,
        ``acquisition_cost``, ``frailty``, ``channel_hazard_effect``, ``size_hazard_effect``,
        ``hazard_scale`` (``hazard_base * frailty * channel and size effects``: the monthly hazard
        of a first month on a plan of effect 1), ``expansion_rate`` and ``contraction_rate``
        (monthly), ``login_rate_per_day``, ``support_rate_per_day``, ``cancel_at`` (first cancel,
        NaT if none within the period), ``churned_at`` (end of the access paid before that cancel;
        may lie after the period), ``reactivated_at`` (first return, NaT if none within the
        period), ``n_subscriptions`` and ``n_cancels`` (within the period). ``settings`` has
        ``kind="subscription"``, ``n_customers``, ``seed``, ``start``, ``end`` and the whole config.

    Raises
    ------
    ValueError
        If ``n_customers`` is not a positive integer, the period is not a pair of naive dates in
        order, or a config value breaks its rule (the message names it).
    """
    cfg = config or SubscriptionConfig()
    start_ts, end_ts = _validate(n_customers, start, end, cfg)
    n = int(n_customers)
    rng = np.random.default_rng(seed)
    period_days = (end_ts - start_ts).days + 1
    start_s = start_ts.value // 1_000_000_000

    cust = _draw_acquisitions(rng, n, period_days, cfg)
    anchors = _Anchors.from_seconds(start_s + cust["acq_s"])
    end_s = start_s + period_days * _DAY_S
    path = _simulate_billing(rng, cust, anchors, end_s, end_s + round(cfg.fade_days * _DAY_S), cfg)
    ev_owner, ev_days, ev_code = _draw_engagement(rng, cust, path["spells"], start_s, period_days, cfg)

    ids = customer_ids(n)
    start_ns = start_ts.value
    prices = np.array([p.price for p in cfg.plans])
    transactions = timed_rows(
        ids, path["invoice_owner"], path["invoice_s"] - start_s, start_ns, amount=prices[path["invoice_plan"]]
    )
    ev_seconds = np.concatenate([whole_seconds(ev_days, period_days), path["event_s"] - start_s])
    ev_owner = np.concatenate([ev_owner, path["event_owner"]])
    ev_code = np.concatenate([ev_code, path["event_code"]])
    events = timed_rows(ids, ev_owner, ev_seconds, start_ns, event_type=(SUBSCRIPTION_EVENT_TYPES, ev_code))
    del ev_seconds, ev_owner, ev_code

    customer_id = pd.Index(pd.array(ids, dtype="str"), name="customer_id")
    acquired_at = seconds_to_datetime(cust["acq_s"], start_ns)
    channel = _names(cfg.channels, cust["channel"])
    size = _names(cfg.company_sizes, cust["size"])
    plan = _names(cfg.plans, cust["plan"])
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "acquired_at": acquired_at,
            "channel": channel,
            "acquisition_cost": cust["cac"],
            "plan": plan,
            "company_size": size,
        }
    )
    truth = pd.DataFrame(
        {
            "acquired_at": acquired_at,
            "channel": channel,
            "company_size": size,
            "plan": plan,
            "acquisition_cost": cust["cac"],
            "frailty": cust["frailty"],
            "channel_hazard_effect": cust["ch_hazard"],
            "size_hazard_effect": cust["size_hazard"],
            "hazard_scale": cust["hazard_scale"],
            "expansion_rate": cust["expansion"],
            "contraction_rate": cust["contraction"],
            "login_rate_per_day": cust["login"],
            "support_rate_per_day": cust["support"],
            "cancel_at": _optional_datetime(path["first_cancel_s"]),
            "churned_at": _optional_datetime(path["first_churn_s"]),
            "reactivated_at": _optional_datetime(path["first_return_s"]),
            "n_subscriptions": path["n_subscriptions"],
            "n_cancels": path["n_cancels"],
        },
        index=customer_id,
    )
    truth.attrs.update({"kind": "subscription", "period_start": str(start_ts.date()), "period_end": str(end_ts.date())})
    settings = book_settings(n, seed, start_ts, end_ts, cfg.to_dict(), kind="subscription")
    return SyntheticBook(
        tables=Tables(transactions=transactions, events=events, customers=customers),
        truth=truth,
        settings=settings,
    )


def subscription_truth(
    book: SyntheticBook,
    *,
    cutoff: str | pd.Timestamp,
    horizon_days: int = 182,
    gross_margin: float = 0.8,
    annual_discount_rate: float = 0.10,
    max_months: int = 60,
) -> SubscriptionTruth:
    """Exact churn, spend, lifetime and CLV of every customer given its state at the cutoff.

    The state of a customer at ``t0`` (the end of the cutoff day) is read from the book's tables,
    everything before ``t0``: the billing month it is in, whether that month was invoiced, the plan
    and the tenure of the running subscription, a ``cancel`` or plan-change event in that month,
    and for a churned customer the plan and the anniversaries passed since the churn. States:

    - ``active``: subscribed in its first subscription, no cancel this month;
    - ``reactivated``: the same in a subscription started by a return;
    - ``cancelled``: cancelled this month, access paid to the end of the month, no invoice ahead;
    - ``churned``: no access; may still come back.

    Given the state and the latent parameters, every figure is an exact expectation of the model
    in the module docstring (no Monte Carlo): a forward recursion over billing months of the plan
    distribution of the running subscription, of returners waiting, and of the reactivated
    subscriptions by tenure; and, for the lifetime, closed forms (below).

    Parameters
    ----------
    book : SyntheticBook
        A book made by :func:`generate_subscription` (or read back by ``read_book``), tables
        unchanged.
    cutoff : str or Timestamp
        Cutoff date, within the book's period.
    horizon_days : int
        H: the window is ``[t0, t0 + H days)``. It may reach past the period end: the truth describes
        the process, the book records nothing after its end.
    gross_margin : float
        m, share of revenue kept as margin, in [0, 1] (0.8: a typical software gross margin).
    annual_discount_rate : float
        d; cash flows are discounted per billing month of the customer's calendar by
        ``gamma = (1 + d) ** (-1 / 12)``, and by ``gamma ** (1 - f)`` from ``t0`` to the next
        anniversary when ``t0`` lies at fraction ``f`` of a billing month.
    max_months : int
        Length of the monthly curves (``revenue_by_month``, ``paying_by_month``). It caps nothing:
        the lifetime figures sum the whole remaining relationship.

    Returns
    -------
    SubscriptionTruth
        ``customers`` has, per customer acquired before ``t0``:

        - ``state``, ``plan`` (billed this month, or last billed if churned), ``tenure_months``
          (billing months of the running subscription before this one: 0 in its first month; NA
          if churned), ``next_billing_at`` (first anniversary at or after ``t0``);
        - ``churn_probability``: P(the subscription running at ``t0`` is cancelled before
          ``t0 + H``); 1 for ``cancelled`` and ``churned`` (decided);
        - ``expected_spend``: expected invoice total in the window, returns included;
        - ``clv``: discounted expected margin of every invoice from ``t0`` on, returns and their
          own later churns and returns included; ``clv_reactivation``: the part due to returns
          (all of ``clv`` for ``cancelled`` and ``churned``);
        - ``clv_tail_share``: share of ``clv`` due after the ``max_months``-th anniversary
          (how far the tail goes; NaN where ``clv`` is 0);
        - ``expected_lifetime_days``: expected days from ``t0`` to the end of the access of the
          running subscription (returns excluded; 0 if churned).

    Raises
    ------
    ValueError
        If the book is not a subscription book, the cutoff lies outside its period, or a setting is
        out of range.

    Notes
    -----
    With ``gamma`` as above, margin ``m``, price vector ``c``, ``s_k = exp(-h_k)`` the month
    survival by plan at tenure ``k``, ``Q`` the plan-change matrix, ``rho`` the reactivation share
    and ``a`` the reactivation rate, the value at an anniversary of a subscription at tenure ``k``
    is the Bellman recursion

        V_k = m c + gamma diag(s_k) Q V_{k+1} + gamma rho kappa (1 - s_k) * W,
        kappa = gamma a / (1 - gamma (1 - a)),  W = V_0,

    where ``kappa W_p`` is the value, at a churn on plan ``p``, of a customer who will come back.
    From ``K = hazard_decay_months`` on, ``s_k`` is constant and
    ``V_K = (I - gamma diag(s_K) Q)^-1 (m c + gamma rho kappa (1 - s_K) * W)`` (the geometric tail
    in closed form). Every ``V_k`` is affine in ``W``; ``W = V_0`` then solves a 3 x 3 linear
    system per customer. The expected remaining lifetime follows the current subscription's
    anniversaries month by month for ``max(max_months, K + 1)`` months and adds the closed-form
    expected number of later months, ``(I - diag(s_K) Q)^-1 1``, at the mean Gregorian month
    (30.44 days). By Abel summation that tail is off by at most the range of the partial sums of
    the month lengths' deviations from the mean (4.4 days, measured over 400 years for every day of
    month) times P(the subscription runs past the explicit months).
    """
    cfg = _subscription_config(book)
    _check_truth_settings(horizon_days, gross_margin, annual_discount_rate)
    if max_months < 1 or int(max_months) != max_months:
        raise ValueError(f"max_months must be a positive integer, got {max_months!r}")
    cutoff_ts = pd.Timestamp(cutoff).normalize()
    period_start = pd.Timestamp(book.settings["start"])
    period_end = pd.Timestamp(book.settings["end"])
    if not period_start <= cutoff_ts <= period_end:
        raise ValueError(
            f"cutoff {cutoff_ts.date()} lies outside the book's period {period_start.date()} .. {period_end.date()}"
        )
    t0 = cutoff_ts + pd.Timedelta(days=1)
    t0_s = t0.value // 1_000_000_000
    known = book.truth[book.truth["acquired_at"] < t0]
    obs = _observed_state(book.tables, known, t0_s, cfg)
    chain = _Chain.from_truth(known, cfg)
    n, n_plans = len(known), len(cfg.plans)
    gamma = (1 + annual_discount_rate) ** (-1 / 12)
    horizon_end_s = t0_s + int(horizon_days) * _DAY_S

    plan = obs["plan"]
    onehot = np.eye(n_plans)[plan]
    sub_len = (obs["next_s"] - obs["month_start_s"]).astype(float)
    f = (t0_s - obs["month_start_s"]) / sub_len  # in (0, 1]
    running = obs["subscribed"] & ~obs["cancelled"]
    lam_now = chain.hazard(obs["tenure"])[np.arange(n), plan]
    survive_now = np.where(running, np.exp(-lam_now * (1 - f)), 0.0)
    next_plan = _next_plan_distribution(chain, plan, obs["pending"], f)

    # State at the first anniversary at or after t0 (month index 0 of the recursions).
    cur = survive_now[:, None] * next_plan
    churn_in = np.where(running, 1 - survive_now, obs["cancelled"].astype(float))[:, None] * onehot
    waiting = np.where(obs["subscribed"], 0.0, obs["p_returner"])[:, None] * onehot
    tau = obs["tenure"] + 1

    months_window = int(np.ceil(horizon_days / 28)) + 2
    n_months = max(int(max_months), months_window, cfg.hazard_decay_months + 1)
    grid = obs["anchors"].at(obs["month"][:, None] + 1 + np.arange(n_months + 1)[None, :])
    fwd = _forward(chain, cur, tau, waiting, churn_in, n_months)

    in_window = grid[:, :-1] < horizon_end_s
    expected_spend = (fwd["revenue"] * in_window).sum(axis=1)
    survive_window = _survival_at(chain, obs, lam_now, fwd["current"], tau, grid, horizon_end_s, t0_s)
    churn_probability = np.where(running, 1 - survive_window, 1.0)

    values = _lifetime_values(chain, gamma, gross_margin, tau)
    w = values["W"]
    kappa = values["kappa"]
    to_next = gamma ** (1 - f)
    with_returns = values["alpha"] + np.einsum("npq,nq->np", values["beta"], w)
    current_clv = to_next * survive_now * np.einsum("np,np->n", next_plan, values["alpha"])
    w_plan = w[np.arange(n), plan]
    a = cfg.reactivation_rate
    clv = np.select(
        [running, obs["cancelled"]],
        [
            to_next * (survive_now * np.einsum("np,np->n", next_plan, with_returns)
                       + (1 - survive_now) * chain.rho * kappa * w_plan),
            to_next * chain.rho * kappa * w_plan,
        ],
        to_next * obs["p_returner"] * (a * w_plan + (1 - a) * kappa * w_plan),
    )
    clv_reactivation = clv - current_clv
    discount = to_next[:, None] * gamma ** np.arange(n_months)[None, :]
    explicit = gross_margin * (fwd["revenue"][:, :max_months] * discount[:, :max_months]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Clipped at 0: the explicit sum may exceed the closed form by rounding when the tail is nil.
        tail_share = np.maximum(np.where(clv > 0, 1 - explicit / clv, np.nan), 0.0)

    to_next_days = (obs["next_s"] - t0_s) / _DAY_S
    month_days = np.diff(grid, axis=1) / _DAY_S
    later_months = np.einsum("np,np->n", fwd["current_after"], values["lifetime_months_tail"])
    lifetime = np.select(
        [running, obs["cancelled"]],
        [to_next_days + (fwd["current"].sum(axis=2) * month_days).sum(axis=1) + later_months * _MEAN_MONTH_DAYS,
         to_next_days],
        0.0,
    )

    state = np.select(
        [running & (obs["spell_start"] == 0), running, obs["cancelled"]], [0, 1, 2], 3
    )
    tenure = pd.array(np.where(obs["subscribed"], obs["tenure"], 0), dtype="Int64")
    tenure[~obs["subscribed"]] = pd.NA
    index = known.index
    customers = pd.DataFrame(
        {
            "state": pd.array(np.array(STATES, dtype=object)[state], dtype="str"),
            "plan": _names(cfg.plans, plan),
            "tenure_months": tenure,
            "next_billing_at": seconds_to_datetime(obs["next_s"], 0),
            "churn_probability": churn_probability,
            "expected_spend": expected_spend,
            "clv": clv,
            "clv_reactivation": clv_reactivation,
            "clv_tail_share": tail_share,
            "expected_lifetime_days": lifetime,
        },
        index=index,
    )
    columns = pd.RangeIndex(1, max_months + 1, name="month")
    return SubscriptionTruth(
        customers=customers,
        revenue_by_month=pd.DataFrame(fwd["revenue"][:, :max_months], index=index, columns=columns),
        paying_by_month=pd.DataFrame(fwd["paying"][:, :max_months], index=index, columns=columns),
        settings={
            "cutoff": str(cutoff_ts.date()),
            "horizon_days": int(horizon_days),
            "gross_margin": float(gross_margin),
            "annual_discount_rate": float(annual_discount_rate),
            "max_months": int(max_months),
        },
    )


def new_customer_truth(
    book: SyntheticBook,
    *,
    acquired_at: str | pd.Timestamp,
    horizon_days: int = 182,
    gross_margin: float = 0.8,
    annual_discount_rate: float = 0.10,
    draws: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Expected CLV, churn and CAC of a customer acquired on a date, per channel.

    For each channel, ``draws`` latent customers are drawn from the generator's population
    (company size, signup plan, frailty, plan-change rates); for each, the figures are computed
    exactly as in :func:`subscription_truth` for a subscription about to send its first invoice
    (tenure 0, at midnight of ``acquired_at``); the channel figure is their mean, with the Monte
    Carlo standard error ``sd / sqrt(draws)``. The CAC is exact: the log-normal mean
    ``cac_median * (1 + cac_growth_per_year) ** years * exp(cac_sigma ** 2 / 2)``, ``years`` from
    the start of the period to ``acquired_at`` in 365.25-day years.

    Parameters
    ----------
    book : SyntheticBook
        A book made by :func:`generate_subscription`; only its settings are read.
    acquired_at : str or Timestamp
        Signup date.
    horizon_days, gross_margin, annual_discount_rate
        As in :func:`subscription_truth`; the window starts at the signup.
    draws : int
        Latent customers drawn per channel.
    seed : int
        Seed of those draws.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``channel``: ``clv`` (discounted expected margin of every invoice from the
        signup on, the first one included, returns included) and ``clv_se``; ``acquisition_cost``
        (expected CAC); ``ltv_cac`` = ``clv / acquisition_cost`` and ``ltv_cac_se``;
        ``churn_probability`` (P(cancel before ``acquired_at + H``)) and ``churn_probability_se``;
        ``expected_spend`` (invoices in the first H days) and ``expected_spend_se``;
        ``expected_lifetime_days`` (to the end of the first subscription's access) and its
        ``_se``; ``draws``.

    Raises
    ------
    ValueError
        If the book is not a subscription book or a setting is out of range.
    """
    cfg = _subscription_config(book)
    if draws < 2 or int(draws) != draws:
        raise ValueError(f"draws must be an integer >= 2, got {draws!r}")
    _check_truth_settings(horizon_days, gross_margin, annual_discount_rate)
    day = pd.Timestamp(acquired_at).normalize()
    years = (day - pd.Timestamp(book.settings["start"])) / pd.Timedelta(days=365.25)
    rng = np.random.default_rng(seed)
    gamma = (1 + annual_discount_rate) ** (-1 / 12)
    n_plans = len(cfg.plans)
    anchor = np.array([day.value // 1_000_000_000], dtype=np.int64)
    months_window = int(np.ceil(horizon_days / 28)) + 2
    n_months = max(months_window, cfg.hazard_decay_months + 1)
    grid = _Anchors.from_seconds(anchor).at(np.arange(n_months + 1)[None, :])  # (1, n_months + 1)
    horizon_end_s = int(anchor[0]) + int(horizon_days) * _DAY_S
    draws = int(draws)

    rows = {}
    for ch_index, ch in enumerate(cfg.channels):
        latent = _draw_latent(rng, np.full(draws, ch_index, dtype=np.int8), cfg)
        chain = _Chain(
            hazard_scale=latent["hazard_scale"], expansion=latent["expansion"],
            contraction=latent["contraction"], cfg=cfg,
        )
        plan = latent["plan"]
        start = np.eye(n_plans)[plan]
        zeros = np.zeros((draws, n_plans))
        tau = np.zeros(draws, dtype=np.int64)
        fwd = _forward(chain, start, tau, zeros, zeros, n_months, reactivation_months=months_window)
        in_window = grid[:, :-1] < horizon_end_s
        spend = (fwd["revenue"][:, :months_window] * in_window[:, :months_window]).sum(axis=1)
        survive = _survival_from_grid(chain, fwd["current"], tau, grid, horizon_end_s)
        values = _lifetime_values(chain, gamma, gross_margin, tau)
        clv = values["W"][np.arange(draws), plan]
        month_days = np.diff(grid, axis=1) / _DAY_S
        later = np.einsum("np,np->n", fwd["current_after"], values["lifetime_months_tail"])
        lifetime = (fwd["current"].sum(axis=2) * month_days).sum(axis=1) + later * _MEAN_MONTH_DAYS
        cac = ch.cac_median * (1 + ch.cac_growth_per_year) ** years * np.exp(ch.cac_sigma**2 / 2)
        row = {"acquisition_cost": cac}
        for name, x in (
            ("clv", clv), ("churn_probability", 1 - survive), ("expected_spend", spend),
            ("expected_lifetime_days", lifetime),
        ):
            row[name] = x.mean()
            row[f"{name}_se"] = x.std(ddof=1) / np.sqrt(draws)
        row["ltv_cac"] = row["clv"] / cac if cac > 0 else np.inf
        row["ltv_cac_se"] = row["clv_se"] / cac if cac > 0 else np.nan
        row["draws"] = draws
        rows[ch.name] = row
    columns = [
        "clv", "clv_se", "acquisition_cost", "ltv_cac", "ltv_cac_se", "churn_probability",
        "churn_probability_se", "expected_spend", "expected_spend_se", "expected_lifetime_days",
        "expected_lifetime_days_se", "draws",
    ]
    out = pd.DataFrame.from_dict(rows, orient="index")[columns]
    out.index = pd.Index(pd.array(list(rows), dtype="str"), name="channel")
    return out


# --------------------------------------------------------------------------------------------------
# internals: billing times are int64 seconds since the epoch; engagement times float days since start


def _validate(n_customers, start, end, cfg: SubscriptionConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    start_ts, end_ts = validate_period(n_customers, start, end)
    prices = [p.price for p in cfg.plans]
    if len(prices) < 1 or min(prices) <= 0 or any(b <= a for a, b in zip(prices, prices[1:])):
        raise ValueError(f"plans need positive prices in strictly increasing order, got {prices}")
    for group in ("channels", "company_sizes"):
        specs = getattr(cfg, group)
        if not specs or any(s.share < 0 for s in specs) or sum(s.share for s in specs) <= 0:
            raise ValueError(f"{group} need non-negative shares with a positive sum")
    for ch in cfg.channels:
        if len(ch.plan_mix) != len(prices) or min(ch.plan_mix) < 0 or sum(ch.plan_mix) <= 0:
            raise ValueError(
                f"channel {ch.name}: plan_mix needs {len(prices)} non-negative weights with a positive sum"
            )
        if ch.cac_median < 0 or ch.cac_sigma < 0 or ch.cac_growth_per_year <= -1:
            raise ValueError(f"channel {ch.name}: cac_median and cac_sigma must be >= 0, cac_growth_per_year > -1")
    effects = [p.hazard_effect for p in cfg.plans] + [c.hazard_effect for c in cfg.channels]
    effects += [s.hazard_effect for s in cfg.company_sizes] + [s.plan_tilt for s in cfg.company_sizes]
    effects += [p.login_effect for p in cfg.plans]
    if min(effects) <= 0:
        raise ValueError("hazard effects, login effects and plan tilts must be > 0")
    for name in ("fade_floor", "post_cancel_login_share", "reactivation_share"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    for name in ("expansion_mean", "contraction_mean"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0 < cfg.reactivation_rate <= 1:
        raise ValueError(f"reactivation_rate must be in (0, 1], got {cfg.reactivation_rate}")
    positive = (
        "acquisition_growth", "hazard_base", "frailty_shape", "expansion_concentration",
        "contraction_concentration", "login_rate_mean", "login_rate_shape", "support_rate_mean",
        "support_rate_shape", "fade_days", "fade_power",
    )
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.hazard_decay < 0:
        raise ValueError(f"hazard_decay must be >= 0, got {cfg.hazard_decay}")
    if int(cfg.hazard_decay_months) != cfg.hazard_decay_months or cfg.hazard_decay_months < 0:
        raise ValueError(f"hazard_decay_months must be a non-negative integer, got {cfg.hazard_decay_months}")
    if not cfg.login_frailty_elasticity < cfg.frailty_shape:
        raise ValueError(
            "login_frailty_elasticity must be below frailty_shape (the mean login rate is infinite otherwise)"
        )
    if cfg.support_boost < 1:
        raise ValueError(f"support_boost must be >= 1, got {cfg.support_boost}")
    return start_ts, end_ts


def _check_truth_settings(horizon_days, gross_margin, annual_discount_rate) -> None:
    if horizon_days <= 0 or int(horizon_days) != horizon_days:
        raise ValueError(f"horizon_days must be a positive integer, got {horizon_days!r}")
    if not 0 <= gross_margin <= 1:
        raise ValueError(f"gross_margin must be in [0, 1], got {gross_margin}")
    if not annual_discount_rate > -1:
        raise ValueError(f"annual_discount_rate must be > -1, got {annual_discount_rate}")


def _subscription_config(book: SyntheticBook) -> SubscriptionConfig:
    if book.settings.get("kind") != "subscription":
        raise ValueError(
            f"book.settings['kind'] is {book.settings.get('kind')!r}: pass a book made by generate_subscription"
        )
    return SubscriptionConfig.from_dict(book.settings["config"])


def _names(specs, codes: np.ndarray):
    return pd.array(np.array([s.name for s in specs], dtype=object)[codes], dtype="str")


def _optional_datetime(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as datetime64[ns], -1 (none) as NaT."""
    out = (seconds * 1_000_000_000).astype("datetime64[ns]")
    out[seconds < 0] = np.datetime64("NaT")
    return out


def _beta(rng, mean: float, concentration: float, n: int) -> np.ndarray:
    if mean == 0:
        return np.zeros(n)
    return rng.beta(mean * concentration, (1 - mean) * concentration, n)


def _draw_latent(rng, channel: np.ndarray, cfg: SubscriptionConfig) -> dict:
    """Everything about a customer but the signup time and the CAC, given its channel."""
    n = len(channel)
    n_plans = len(cfg.plans)
    size_shares = np.array([s.share for s in cfg.company_sizes], dtype=float)
    size = rng.choice(len(size_shares), size=n, p=size_shares / size_shares.sum()).astype(np.int8)
    mix = np.array([c.plan_mix for c in cfg.channels], dtype=float)[channel]
    tilt = np.array([s.plan_tilt for s in cfg.company_sizes])[size]
    weights = mix * tilt[:, None] ** np.arange(n_plans)[None, :]
    cum = np.cumsum(weights, axis=1)
    u = rng.random(n) * cum[:, -1]
    plan = np.minimum((cum <= u[:, None]).sum(axis=1), n_plans - 1).astype(np.int8)

    k = cfg.frailty_shape
    frailty = rng.gamma(k, 1 / k, n)
    ch_hazard = np.array([c.hazard_effect for c in cfg.channels])[channel]
    size_hazard = np.array([s.hazard_effect for s in cfg.company_sizes])[size]
    expansion = _beta(rng, cfg.expansion_mean, cfg.expansion_concentration, n)
    contraction = _beta(rng, cfg.contraction_mean, cfg.contraction_concentration, n)
    # E[F^-e] for F ~ Gamma(k, 1/k) is Gamma(k - e) / Gamma(k) * k^e: dividing by it keeps the mean
    # login rate at login_rate_mean * plan effect whatever the elasticity.
    e = cfg.login_frailty_elasticity
    norm = np.exp(gammaln(k - e) - gammaln(k) + e * np.log(k))
    ls = cfg.login_rate_shape
    login = (
        cfg.login_rate_mean * np.array([p.login_effect for p in cfg.plans])[plan]
        * frailty ** (-e) / norm * rng.gamma(ls, 1 / ls, n)
    )
    ss = cfg.support_rate_shape
    support = rng.gamma(ss, cfg.support_rate_mean / ss, n)
    return {
        "size": size, "plan": plan, "frailty": frailty, "ch_hazard": ch_hazard,
        "size_hazard": size_hazard, "hazard_scale": cfg.hazard_base * frailty * ch_hazard * size_hazard,
        "expansion": expansion, "contraction": contraction, "login": login, "support": support,
    }


def _draw_acquisitions(rng, n: int, period_days: int, cfg: SubscriptionConfig) -> dict:
    # Signup order is id order (acquisition_days sorts).
    acq_s = whole_seconds(acquisition_days(rng, n, period_days, cfg.acquisition_growth), period_days)
    shares = np.array([c.share for c in cfg.channels], dtype=float)
    channel = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int8)
    latent = _draw_latent(rng, channel, cfg)
    years = acq_s / (365.25 * _DAY_S)
    median = np.array([c.cac_median for c in cfg.channels])[channel]
    growth = np.array([c.cac_growth_per_year for c in cfg.channels])[channel]
    sigma = np.array([c.cac_sigma for c in cfg.channels])[channel]
    cac = np.round(median * (1 + growth) ** years * np.exp(sigma * rng.standard_normal(n)), 2)
    return {"acq_s": acq_s, "channel": channel, "cac": cac, **latent}


@dataclass(frozen=True)
class _Anchors:
    """Billing calendars: anniversary ``j`` of each anchor, as epoch seconds."""

    month: np.ndarray  # months since 1970-01 of the anchor
    dom: np.ndarray  # 0-based day of month of the anchor
    tod: np.ndarray  # seconds into the day

    @classmethod
    def from_seconds(cls, seconds: np.ndarray) -> _Anchors:
        day = seconds // _DAY_S
        month = _month_of_day(day)
        first = month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        return cls(month=month, dom=day - first, tod=seconds - day * _DAY_S)

    def at(self, j, idx=None) -> np.ndarray:
        """Epoch seconds of anniversary ``j`` (broadcast against the anchors, or those at ``idx``)."""
        month, dom, tod = (self.month, self.dom, self.tod) if idx is None else (
            self.month[idx], self.dom[idx], self.tod[idx])
        if np.ndim(j) == 2:
            month, dom, tod = month[:, None], dom[:, None], tod[:, None]
        target = month + j
        first = target.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        nxt = (target + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        return (first + np.minimum(dom, nxt - first - 1)) * _DAY_S + tod


def _month_of_day(day: np.ndarray) -> np.ndarray:
    return np.asarray(day).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _tenure_decay(tenure, cfg: SubscriptionConfig):
    """The hazard's tenure factor ``(1 + min(k, hazard_decay_months)) ** -hazard_decay``."""
    return (1.0 + np.minimum(tenure, cfg.hazard_decay_months)) ** -cfg.hazard_decay


def _simulate_billing(rng, cust: dict, anchors: _Anchors, end_s: int, sim_end_s: int, cfg: SubscriptionConfig) -> dict:
    """Month-by-month billing path of every customer, vectorised across customers.

    Returns the invoices and the billing events (upgrade, downgrade, cancel) dated before ``end_s``,
    the subscription spells (owner, start, cancel, end of access; simulated up to ``sim_end_s``
    so that engagement can fade before a cancel just after the period) and the truth summaries.
    """
    n = len(cust["acq_s"])
    n_plans = len(cfg.plans)
    plan_effect = np.array([p.hazard_effect for p in cfg.plans])
    state = np.zeros(n, dtype=np.int8)
    tenure = np.zeros(n, dtype=np.int64)
    plan = cust["plan"].astype(np.int8).copy()
    churn_month = np.zeros(n, dtype=np.int64)
    spell_of = np.arange(n, dtype=np.int64)
    n_spells = n
    inv_o, inv_t, inv_p = [], [], []
    ev_o, ev_t, ev_c = [], [], []
    sp_owner, sp_start = [np.arange(n, dtype=np.int64)], [anchors.at(0)]
    end_id, end_cancel, end_access = [], [], []

    alive = np.arange(n, dtype=np.int64)
    j = 0
    while len(alive):
        g0 = anchors.at(j, alive)
        inside = g0 < sim_end_s
        alive, g0 = alive[inside], g0[inside]
        if not len(alive):
            break
        g1 = anchors.at(j + 1, alive)
        # Returners, from the second anniversary after the last invoice on.
        waiting = np.flatnonzero((state[alive] == _WAITING) & (churn_month[alive] < j))
        back = waiting[rng.random(len(waiting)) < cfg.reactivation_rate]
        o = alive[back]
        state[o], tenure[o] = _SUB, 0
        spell_of[o] = n_spells + np.arange(len(o))
        n_spells += len(o)
        sp_owner.append(o)
        sp_start.append(g0[back])

        sub = np.flatnonzero(state[alive] == _SUB)
        o, t0, t1 = alive[sub], g0[sub], g1[sub]
        p = plan[o]
        inv_o.append(o)
        inv_t.append(t0)
        inv_p.append(p)
        lam = cust["hazard_scale"][o] * plan_effect[p] * _tenure_decay(tenure[o], cfg)
        # Exponential time to cancel, in months of this billing month: cancelled if it is < 1.
        s = rng.exponential(1.0, len(o)) / lam
        cancel = s < 1
        length = t1 - t0
        up = (p < n_plans - 1) & (rng.random(len(o)) < cust["expansion"][o])
        down = ~up & (p > 0) & (rng.random(len(o)) < cust["contraction"][o])
        at = rng.random(len(o))
        happens = (up | down) & (~cancel | (at < s))
        t_change = t0 + np.floor(at * length).astype(np.int64)
        t_cancel = t0 + np.floor(np.minimum(s, 1.0) * length).astype(np.int64)
        ev_o += [o[happens], o[cancel]]
        ev_t += [t_change[happens], t_cancel[cancel]]
        ev_c += [np.where(up[happens], 2, 3).astype(np.int8), np.full(int(cancel.sum()), 4, dtype=np.int8)]

        stay = ~cancel
        tenure[o[stay]] += 1
        plan[o[stay]] += (up[stay].astype(np.int8) - down[stay].astype(np.int8))
        leave = o[cancel]
        returner = rng.random(len(leave)) < cfg.reactivation_share
        state[leave] = np.where(returner, _WAITING, _GONE)
        churn_month[leave] = j + 1
        end_id.append(spell_of[leave])
        end_cancel.append(t_cancel[cancel])
        end_access.append(t1[cancel])
        alive = alive[state[alive] != _GONE]
        j += 1

    inv_o, inv_t, inv_p = (np.concatenate(x) for x in (inv_o, inv_t, inv_p))
    keep = inv_t < end_s
    ev_o, ev_t, ev_c = (np.concatenate(x) for x in (ev_o, ev_t, ev_c))
    ev_keep = ev_t < end_s
    owner = np.concatenate(sp_owner)
    start = np.concatenate(sp_start)
    spell_cancel = np.full(n_spells, -1, dtype=np.int64)
    spell_access = np.full(n_spells, -1, dtype=np.int64)
    ids = np.concatenate(end_id)
    spell_cancel[ids] = np.concatenate(end_cancel)
    spell_access[ids] = np.concatenate(end_access)

    # Truth summaries, within the period.
    first_cancel = np.where((spell_cancel[:n] >= 0) & (spell_cancel[:n] < end_s), spell_cancel[:n], -1)
    first_churn = np.where(first_cancel >= 0, spell_access[:n], -1)
    first_return = np.full(n, -1, dtype=np.int64)
    returns = np.arange(n, n_spells)
    returns = returns[start[returns] < end_s]
    # Spells are numbered in time order, so the first return of a customer has its lowest id.
    first_return[owner[returns[::-1]]] = start[returns[::-1]]
    n_subscriptions = np.bincount(owner[start < end_s], minlength=n).astype(np.int64)
    n_cancels = np.bincount(ev_o[ev_keep & (ev_c == 4)], minlength=n).astype(np.int64)
    return {
        "invoice_owner": inv_o[keep], "invoice_s": inv_t[keep], "invoice_plan": inv_p[keep],
        "event_owner": ev_o[ev_keep], "event_s": ev_t[ev_keep], "event_code": ev_c[ev_keep],
        "spells": {"owner": owner, "start": start, "cancel": spell_cancel, "access_end": spell_access},
        "first_cancel_s": first_cancel, "first_churn_s": first_churn, "first_return_s": first_return,
        "n_subscriptions": n_subscriptions, "n_cancels": n_cancels,
    }


def _draw_engagement(rng, cust: dict, spells: dict, start_s: int, period_days: int, cfg: SubscriptionConfig):
    """Logins and support tickets of every spell, as (owner, float days since start, code)."""
    def days(seconds):
        return np.where(seconds >= 0, (seconds - start_s) / _DAY_S, np.inf)

    owner = spells["owner"]
    a = (spells["start"] - start_s) / _DAY_S
    x = days(spells["cancel"])
    z = days(spells["access_end"])
    end = np.full(len(a), float(period_days))
    fade_start = np.clip(x - cfg.fade_days, a, end)
    active_end = np.minimum(x, end)
    access_end = np.minimum(z, end)
    login = cust["login"][owner]
    support = cust["support"][owner]
    owners, times, codes = [], [], []

    def add(idx, t, code):
        owners.append(owner[idx])
        times.append(t)
        codes.append(np.full(len(t), code, dtype=np.int8))

    add(*points(rng, login, a, fade_start), 0)
    idx, t = points(rng, login, fade_start, active_end)
    left = (x[idx] - t) / cfg.fade_days  # 1 at the start of the fade, 0 at the cancel
    keep = rng.random(len(t)) < cfg.fade_floor + (1 - cfg.fade_floor) * left**cfg.fade_power
    add(idx[keep], t[keep], 0)
    add(*points(rng, cfg.post_cancel_login_share * login, active_end, access_end), 0)

    add(*points(rng, support, a, fade_start), 1)
    idx, t = points(rng, support * cfg.support_boost, fade_start, active_end)
    mult = 1 + (cfg.support_boost - 1) * (1 - (x[idx] - t) / cfg.fade_days)
    keep = rng.random(len(t)) * cfg.support_boost < mult
    add(idx[keep], t[keep], 1)
    return np.concatenate(owners), np.concatenate(times), np.concatenate(codes)


# --------------------------------------------------------------------------------------------------
# internals of the truth: the Markov chain of one customer, vectorised across customers


@dataclass(frozen=True)
class _Chain:
    hazard_scale: np.ndarray  # (n,)
    expansion: np.ndarray  # (n,)
    contraction: np.ndarray  # (n,)
    cfg: SubscriptionConfig

    @classmethod
    def from_truth(cls, truth: pd.DataFrame, cfg: SubscriptionConfig) -> _Chain:
        return cls(
            hazard_scale=truth["hazard_scale"].to_numpy(dtype=float),
            expansion=truth["expansion_rate"].to_numpy(dtype=float),
            contraction=truth["contraction_rate"].to_numpy(dtype=float),
            cfg=cfg,
        )

    @property
    def rho(self) -> float:
        return self.cfg.reactivation_share

    @property
    def prices(self) -> np.ndarray:
        return np.array([p.price for p in self.cfg.plans])

    def hazard(self, tenure) -> np.ndarray:
        """Monthly hazard (n, P) by plan at a tenure, scalar or one per customer (n,)."""
        effect = np.array([p.hazard_effect for p in self.cfg.plans])
        return (self.hazard_scale * _tenure_decay(tenure, self.cfg))[:, None] * effect[None, :]

    def hazard_by_tenure(self, tenures: np.ndarray) -> np.ndarray:
        """Monthly hazard (n, K, P) at each of K tenures."""
        effect = np.array([p.hazard_effect for p in self.cfg.plans])
        decay = _tenure_decay(tenures, self.cfg)
        return self.hazard_scale[:, None, None] * decay[None, :, None] * effect[None, None, :]

    def transition(self) -> np.ndarray:
        """Plan-change matrix Q (n, P, P): next plan given survival to the next invoice."""
        n, n_plans = len(self.hazard_scale), len(self.cfg.plans)
        q = np.zeros((n, n_plans, n_plans))
        for p in range(n_plans):
            up = self.expansion if p < n_plans - 1 else np.zeros(n)
            down = (1 - up) * self.contraction if p > 0 else np.zeros(n)
            if p < n_plans - 1:
                q[:, p, p + 1] = up
            if p > 0:
                q[:, p, p - 1] = down
            q[:, p, p] = 1 - up - down
        return q


def _next_plan_distribution(chain: _Chain, plan: np.ndarray, pending: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Plan of the next invoice given survival to it, at fraction ``f`` of the month.

    A change already seen this month (``pending`` = +1 / -1) is certain. Otherwise, with P_up and
    P_down the month's change probabilities, a change still to come is one whose uniform time falls
    after ``f``: P(up | none before f) = P_up (1 - f) / (1 - (P_up + P_down) f).
    """
    n, n_plans = len(plan), len(chain.cfg.plans)
    rows = np.arange(n)
    q = chain.transition()[rows, plan]  # (n, P): this month's change probabilities
    stay = q[rows, plan]
    still = (1 - f) / (1 - (1 - stay) * f)
    out = q * still[:, None]
    out[rows, plan] = 0
    out[rows, plan] = 1 - out.sum(axis=1)
    seen = pending != 0
    out[seen] = np.eye(n_plans)[plan[seen] + pending[seen]]
    return out


def _forward(chain: _Chain, cur, tau, waiting, churn_in, n_months: int, reactivation_months: int | None = None) -> dict:
    """Forward recursion over anniversaries ``i = 0 .. n_months - 1``.

    ``cur`` (n, P): probability that the running subscription invoices plan p at anniversary 0,
    its tenure then being ``tau``; ``waiting`` (n, P): probability of being a returner not yet back
    (who may return at anniversary 0), by plan; ``churn_in`` (n, P): probability of churning at
    anniversary 0 (returners among them may come back from anniversary 1 on). Returns, per month,
    the expected revenue and P(paying) (returns included for the first ``reactivation_months``
    months, all by default; the running subscription alone after them), the running
    subscription's plan distribution ``current`` (n, M, P), and ``current_after`` (n, P), its
    distribution at anniversary ``n_months``.
    """
    n, n_plans = cur.shape
    cap = chain.cfg.hazard_decay_months
    a, rho = chain.cfg.reactivation_rate, chain.rho
    # Customers on the last axis: every (tenure, plan) slice below is a contiguous run of customers.
    q = chain.transition().transpose(1, 2, 0)  # (P, P, n)
    prices = chain.prices[:, None]
    reactivation_months = n_months if reactivation_months is None else reactivation_months
    # Returned subscriptions by tenure and plan. Within the first reactivation_months months a
    # return is younger than reactivation_months, and tenures from the cap on share one slot
    # (their hazard no longer moves): slots = min(cap, reactivation_months) + 1.
    slots = min(cap, reactivation_months) + 1
    s_back = np.exp(-chain.hazard_by_tenure(np.arange(slots))).transpose(1, 2, 0)  # (slots, P, n)
    back = np.zeros((slots, n_plans, n))
    revenue = np.zeros((n_months, n))
    paying = np.zeros((n_months, n))
    current = np.zeros((n_months, n_plans, n))
    cur, waiting, churn_in = cur.T.copy(), waiting.T.copy(), churn_in.T.copy()
    for i in range(n_months):
        current[i] = cur
        s = np.exp(-chain.hazard(tau + i)).T
        total = cur
        if i < reactivation_months:
            returning = a * waiting
            waiting += rho * churn_in - returning
            back[0] += returning
            in_back = back.sum(axis=0)
            total = cur + in_back
            survivors = back * s_back
            churn_in = cur * (1 - s) + in_back - survivors.sum(axis=0)
            # One month older (a return reaching the last slot before the cap is past the window).
            moved = _apply(survivors, q)
            back[1:] = moved[:-1]
            back[0] = 0
            if slots == cap + 1:
                back[cap] += moved[cap]
        revenue[i] = (total * prices).sum(axis=0)
        paying[i] = total.sum(axis=0)
        cur = _apply(cur * s, q)
    return {
        "revenue": revenue.T, "paying": paying.T, "current": current.transpose(2, 0, 1),
        "current_after": cur.T,
    }


def _apply(mass: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``mass @ q`` per customer, customers last: mass (..., P, n), q (P, P, n); unrolled over P."""
    out = np.empty_like(mass)
    for r in range(q.shape[1]):
        out[..., r, :] = mass[..., 0, :] * q[0, r]
        for p in range(1, q.shape[0]):
            out[..., r, :] += mass[..., p, :] * q[p, r]
    return out


def _survival_from_grid(chain: _Chain, current, tau, grid, end_s) -> np.ndarray:
    """P(the running subscription survives to ``end_s``), ``end_s`` at or after anniversary 0.

    ``current`` (n, M, P) is its plan distribution at anniversaries 0 .. M-1 (``grid``, epoch
    seconds, (n or 1, M + 1)); within the month holding ``end_s`` the hazard is constant.
    """
    n = len(tau)
    grid = np.broadcast_to(grid, (n, grid.shape[1]))
    end_s = np.broadcast_to(end_s, (n,))
    i = (grid[:, :-1] <= end_s[:, None]).sum(axis=1) - 1  # month holding end_s
    frac = (end_s - grid[np.arange(n), i]) / (grid[np.arange(n), i + 1] - grid[np.arange(n), i])
    lam = chain.hazard(tau + i)
    at_start = current[np.arange(n), i]
    return (at_start * np.exp(-lam * frac[:, None])).sum(axis=1)


def _survival_at(chain: _Chain, obs: dict, lam_now, current, tau, grid, end_s, t0_s) -> np.ndarray:
    """P(the subscription running at t0 survives to ``end_s``), within the current month or later."""
    inside = end_s < obs["next_s"]
    length = obs["next_s"] - obs["month_start_s"]
    within = np.exp(-lam_now * (end_s - t0_s) / length)
    later = _survival_from_grid(chain, current, tau, grid, np.maximum(end_s, obs["next_s"]))
    return np.where(inside, within, later)


def _lifetime_values(chain: _Chain, gamma: float, margin: float, tau) -> dict:
    """Closed-form values (see the Notes of subscription_truth), picked at tenure ``tau`` per customer.

    Returns ``alpha`` (n, P) and ``beta`` (n, P, P) with ``V_tau = alpha + beta W``, ``W`` (n, P),
    ``kappa`` and ``lifetime_months_tail`` (n, P): expected billed months from an anniversary at
    tenure >= K on.
    """
    cfg = chain.cfg
    n, n_plans = len(chain.hazard_scale), len(cfg.plans)
    cap = cfg.hazard_decay_months
    a, rho = cfg.reactivation_rate, chain.rho
    kappa = gamma * a / (1 - gamma * (1 - a))
    q = chain.transition()
    eye = np.broadcast_to(np.eye(n_plans), (n, n_plans, n_plans))
    reward = margin * chain.prices[:, None]
    pick = np.minimum(tau, cap)

    # The stationary tail in closed form (n, P, P systems), then the recursion down to tenure 0
    # with customers on the last axis, where the unrolled 3 x 3 products run on contiguous rows.
    s = np.exp(-chain.hazard(cap))
    step = s[:, :, None] * q  # diag(s) Q
    alpha = np.linalg.solve(eye - gamma * step, np.broadcast_to(reward.T, (n, n_plans))[..., None])[..., 0]
    beta = np.linalg.solve(eye - gamma * step, _diag(gamma * rho * kappa * (1 - s)))
    lifetime_tail = np.linalg.solve(eye - step, np.ones((n, n_plans, 1)))[..., 0]
    alpha_pick, beta_pick = alpha.copy(), beta.copy()
    alpha, beta, q_last = alpha.T.copy(), beta.transpose(1, 2, 0).copy(), q.transpose(1, 2, 0)
    for k in range(cap - 1, -1, -1):
        s = np.exp(-chain.hazard(k)).T  # (P, n)
        step = s[:, None, :] * q_last
        alpha = reward + gamma * (step * alpha[None, :, :]).sum(axis=1)
        beta = gamma * _matmul(step, beta)
        idx = np.arange(n_plans)
        beta[idx, idx] += gamma * rho * kappa * (1 - s)
        here = pick == k
        alpha_pick[here], beta_pick[here] = alpha.T[here], beta.transpose(2, 0, 1)[here]
    # The loop ends at k = 0: W = alpha_0 + beta_0 W.
    w = np.linalg.solve(eye - beta.transpose(2, 0, 1), alpha.T[..., None])[..., 0]
    return {"alpha": alpha_pick, "beta": beta_pick, "W": w, "kappa": kappa, "lifetime_months_tail": lifetime_tail}


def _matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x @ y`` per customer for (P, P, n) stacks, customers last; unrolled over P."""
    out = np.empty_like(y)
    for r in range(x.shape[0]):
        for c in range(y.shape[1]):
            out[r, c] = x[r, 0] * y[0, c]
            for k in range(1, x.shape[1]):
                out[r, c] += x[r, k] * y[k, c]
    return out


def _diag(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape + (x.shape[-1],))
    idx = np.arange(x.shape[-1])
    out[..., idx, idx] = x
    return out


def _observed_state(tables: Tables, known: pd.DataFrame, t0_s: int, cfg: SubscriptionConfig) -> dict:
    """Billing state of each customer of ``known`` from the history before ``t0_s`` (epoch seconds)."""
    n = len(known)
    anchor_s = known["acquired_at"].to_numpy().astype("datetime64[s]").astype(np.int64)
    anchors = _Anchors.from_seconds(anchor_s)
    month = _month_of_day(np.full(n, t0_s // _DAY_S)) - anchors.month
    month = np.where(anchors.at(month) >= t0_s, month - 1, month)  # anniversary before t0
    month_start = anchors.at(month)
    next_s = anchors.at(month + 1)

    tx = tables.transactions
    ts = tx["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    hist = ts < t0_s
    pos = known.index.get_indexer(tx["customer_id"].to_numpy()[hist])
    inv_s = ts[hist]
    if (pos < 0).any():
        raise ValueError(
            "transactions before the cutoff name customers missing from the truth: pass the book unchanged"
        )
    prices = np.array([p.price for p in cfg.plans])
    amount = tx["amount"].to_numpy()[hist]
    plan_of = np.clip(np.searchsorted(prices, amount), 0, len(prices) - 1)
    if not np.array_equal(prices[plan_of], amount):
        raise ValueError("transactions hold amounts that are no plan price: pass the book's tables unchanged")
    inv_j = _month_of_day(inv_s // _DAY_S) - anchors.month[pos]
    order = np.lexsort((inv_j, pos))
    pos, inv_j, plan_of = pos[order], inv_j[order], plan_of[order]
    # Row flags by customer (rows sorted by customer, then month): a spell starts at a customer's
    # first invoice and wherever a month was skipped.
    change = pos[1:] != pos[:-1]
    first = np.r_[True, change][: len(pos)]
    last = np.r_[change, True][: len(pos)]
    spell_row = np.maximum.accumulate(np.where(first | (np.diff(inv_j, prepend=-2) != 1), np.arange(len(pos)), 0))
    last_j = np.full(n, -1, dtype=np.int64)
    last_j[pos[last]] = inv_j[last]
    plan = np.zeros(n, dtype=np.int64)
    plan[pos[last]] = plan_of[last]
    spell_start = np.zeros(n, dtype=np.int64)
    spell_start[pos[last]] = inv_j[spell_row[last]]
    subscribed = last_j == month

    ev = tables.events
    ev_type = ev["event_type"].to_numpy()
    ev_s = ev["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    sel = (ev_s < t0_s) & np.isin(ev_type, ("cancel", "upgrade", "downgrade"))
    e_pos = known.index.get_indexer(ev["customer_id"].to_numpy()[sel])
    e_type, e_s = ev_type[sel], ev_s[sel]
    this_month = (e_pos >= 0) & (e_s >= month_start[np.maximum(e_pos, 0)])
    cancelled = np.zeros(n, dtype=bool)
    cancelled[e_pos[this_month & (e_type == "cancel")]] = True
    cancelled &= subscribed
    pending = np.zeros(n, dtype=np.int64)
    pending[e_pos[this_month & (e_type == "upgrade")]] = 1
    pending[e_pos[this_month & (e_type == "downgrade")]] = -1
    pending[~subscribed | cancelled] = 0

    # A churned customer who has not come back at the anniversaries since the first chance is
    # less likely to be a returner: P = rho (1 - a)^missed / (rho (1 - a)^missed + 1 - rho).
    missed = np.maximum(month - (last_j + 1), 0)
    rho, a = cfg.reactivation_share, cfg.reactivation_rate
    still = rho * (1 - a) ** missed
    posterior = np.divide(still, still + 1 - rho, out=np.zeros(n), where=still + 1 - rho > 0)
    p_returner = np.where(subscribed, 0.0, posterior)
    return {
        "anchors": anchors, "month": month, "month_start_s": month_start, "next_s": next_s,
        "subscribed": subscribed, "cancelled": cancelled, "plan": plan, "pending": pending,
        "tenure": np.where(subscribed, month - spell_start, 0), "spell_start": spell_start,
        "p_returner": p_returner,
    }
