"""The training set: rolling origins planned once, and features + labels stacked over them.

For an evaluation cutoff C and horizon H, the origins are C − H, C − H − step, ... (oldest first):
their label windows end on or before C, so the evaluation window is never seen in training. Each
origin's features use BTYD parameters fitted on the history up to that origin only.
:func:`plan_origins` is the one place where origins are chosen and checked against the data;
:func:`build_training_set` builds exactly the origins it is given.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.btyd import BTYDParams
from features.build import feature_columns
from features.config import FeatureConfig
from features.contract import Tables
from features.dates import parse_cutoff
from features.history import prepare_history
from features.schema import feature_names, feature_schema, feature_set_id
from features.spec import FeatureSpec, assemble
from training.config import BTYD_OFFSET_FEATURES, TrainingConfig
from training.models import FeatureEncoder, row_selection
from training.labels import LABEL_SCHEMA, build_labels

log = logging.getLogger(__name__)

__all__ = [
    "CUTOFF_COLUMN",
    "MAX_MISSING_WINDOW_SHARE",
    "Plan",
    "TrainingInputError",
    "TrainingMatrix",
    "TrainingSet",
    "build_training_matrix",
    "build_training_set",
    "degenerate_origins",
    "degenerate_rows",
    "drop_degenerate_origins",
    "unidentified_fit",
    "plan_origins",
    "training_cutoffs",
    "training_set_schema",
]

# Share of the holdout window that may lie after the last transaction day before labels count as
# incomplete (see plan_origins).
MAX_MISSING_WINDOW_SHARE = 0.05
# Shortest label window plan_origins shrinks to when the forecast horizon does not fit (four weeks).
_MIN_LABEL_DAYS = 28

CUTOFF_COLUMN = FeatureSpec("cutoff", "datetime64[ns]", "the origin (last day of history) the row's features and labels are computed at", "key")


class TrainingInputError(ValueError):
    """The data or the dates cannot give an honest training run; the message is one line."""


def training_set_schema(config: FeatureConfig = FeatureConfig()) -> tuple[FeatureSpec, ...]:
    """Columns of :func:`build_training_set`: features, labels, then ``cutoff``.

    Raises
    ------
    ValueError
        If a feature (e.g. a covariate) is named like a label or key column.
    """
    features = feature_schema(config)
    clash = sorted({s.name for s in features} & {s.name for s in LABEL_SCHEMA + (CUTOFF_COLUMN,)})
    if clash:
        raise ValueError(f"feature names: rule 'distinct from the label columns': {clash} break it")
    return features + LABEL_SCHEMA + (CUTOFF_COLUMN,)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: rule 'a whole number >= 1': got {value!r}")
    return int(value)


def training_cutoffs(training_cutoff, *, horizon_days: int, n_cutoffs: int, step_days: int) -> list[dt.date]:
    """Rolling origins whose label windows end on or before ``training_cutoff``.

    The last origin is ``training_cutoff - horizon_days`` (its window ends exactly on the training
    cutoff); the others step back by ``step_days``.

    Parameters
    ----------
    training_cutoff : date-like
        Last day whose data training may see (labels included).
    horizon_days, n_cutoffs, step_days : int
        Label window length, number of origins, days between consecutive origins.

    Returns
    -------
    list of datetime.date
        ``n_cutoffs`` origins, oldest first.
    """
    training_cutoff = parse_cutoff(training_cutoff)
    horizon_days = _positive_int("horizon_days", horizon_days)
    n_cutoffs = _positive_int("n_cutoffs", n_cutoffs)
    step_days = _positive_int("step_days", step_days)
    last = training_cutoff - dt.timedelta(days=horizon_days)
    return [last - dt.timedelta(days=step_days * i) for i in reversed(range(n_cutoffs))]


@dataclass(frozen=True)
class Plan:
    """The dates of one run, checked against the data."""

    cutoff: pd.Timestamp
    horizon_days: int  # H: the holdout window and the forecast horizon
    origins: tuple[pd.Timestamp, ...]  # oldest first, as features.labels.training_cutoffs
    first_day: pd.Timestamp
    last_day: pd.Timestamp
    label_horizon_days: int = 0  # H_m: the training windows (0: H)

    @property
    def model_horizon_days(self) -> int:
        """H_m, the label window of the training origins."""
        return self.label_horizon_days or self.horizon_days


def plan_origins(tables: Tables, *, cutoff, training: TrainingConfig) -> Plan:
    """Choose and check the evaluation cutoff and the training origins.

    Raises
    ------
    TrainingInputError
        No transactions; a cutoff before the first purchase or on/after the last one; a holdout
        window more than 5% of which lies after the last transaction; label windows that leave
        fewer training origins than the validation slice needs (also after shrinking them).
    """
    cfg = training
    H = cfg.horizon_days
    tx = tables.transactions
    if len(tx) == 0:
        raise TrainingInputError("no transactions: nothing to train on")
    purchases = tx.loc[tx["amount"] >= 0, "timestamp"]
    if len(purchases) == 0:
        raise TrainingInputError("no purchase (amount >= 0) in the transactions: nothing to train on")
    # A customer is known from their first purchase on (features.build): refunds alone do not count.
    first_day = purchases.min().normalize()
    last_day = tx["timestamp"].max().normalize()
    if cutoff is None:
        cutoff_day = last_day - pd.Timedelta(days=H)
        if cutoff_day < first_day:
            raise TrainingInputError(
                f"horizon_days={H} is longer than the {(last_day - first_day).days} days of history "
                f"({first_day.date()} .. {last_day.date()}): no holdout window fits"
            )
    else:
        try:
            cutoff_day = pd.Timestamp(parse_cutoff(cutoff))
        except ValueError as exc:
            raise TrainingInputError(str(exc)) from None
    if cutoff_day < first_day:
        raise TrainingInputError(
            f"cutoff {cutoff_day.date()} is before the first purchase ({first_day.date()})"
        )
    if cutoff_day >= last_day:
        raise TrainingInputError(
            f"cutoff {cutoff_day.date()} is on or after the last transaction ({last_day.date()}): "
            "the holdout window has no data"
        )
    window_end = cutoff_day + pd.Timedelta(days=H)
    missing_days = (window_end - last_day).days
    if missing_days > MAX_MISSING_WINDOW_SHARE * H:
        raise TrainingInputError(
            f"the holdout window ({cutoff_day.date()}, {window_end.date()}] of horizon_days={H} ends "
            f"{missing_days} days after the last transaction ({last_day.date()}): its labels would be "
            "incomplete; use an earlier cutoff or a shorter horizon"
        )
    if missing_days > 0:
        # The last transaction day only bounds the end of observation from below (CDNOW's protocol
        # window ends one day after its last purchase): a sliver is reported, not refused.
        log.warning(
            "holdout window (%s, %s] ends %d day(s) after the last transaction (%s): its labels may be incomplete",
            cutoff_day.date(), window_end.date(), (window_end - last_day).days, last_day.date(),
        )
    # An origin needs customers known at it: the first purchase day is the earliest. Origins before
    # it are dropped (a short history trains on fewer origins) rather than failing the run.
    earliest = first_day + pd.Timedelta(days=cfg.min_history_days)

    def origins_for(label_days: int) -> tuple[list[pd.Timestamp], tuple[pd.Timestamp, ...]]:
        candidates = [
            pd.Timestamp(o)
            for o in training_cutoffs(cutoff_day.date(), horizon_days=label_days, n_cutoffs=cfg.n_cutoffs, step_days=cfg.step_days)
        ]
        return candidates, tuple(o for o in candidates if o >= earliest)

    needed = cfg.validation_cutoffs + 1
    label = cfg.label_horizon_days or H
    candidates, origins = origins_for(label)
    if cfg.label_horizon_days is None and len(origins) < needed:
        # The boosters learn from whole label windows before the cutoff. When H days leave too few,
        # they learn the longest H / j days (j = 2, 3, ...) that leaves every origin, else the
        # longest that leaves enough, and the spend curve carries the rest of the horizon.
        enough = None
        j = 1
        while round(H / (j + 1)) >= _MIN_LABEL_DAYS:
            j += 1
            trial = round(H / j)
            trial_candidates, trial_origins = origins_for(trial)
            if len(trial_origins) == len(trial_candidates):
                enough = (trial, trial_candidates, trial_origins)
                break
            if enough is None and len(trial_origins) >= needed:
                enough = (trial, trial_candidates, trial_origins)
        if enough is not None:
            label, candidates, origins = enough
        if label != H:
            log.info(
                "horizon %d days: the boosters learn %d-day windows (%d whole windows before %s); the spend curve "
                "carries the rest", H, label, len(origins), cutoff_day.date(),
            )  # fmt: skip
    if len(origins) < needed:
        raise TrainingInputError(
            f"label windows of {label} days leave {len(origins)} training origin(s) between the first purchase "
            f"({first_day.date()}) + min_history_days ({cfg.min_history_days}) and cutoff {cutoff_day.date()} "
            f"minus the window; {needed} needed "
            f"(validation_cutoffs={cfg.validation_cutoffs}): use a shorter label_horizon_days or a later cutoff"
        )
    if len(origins) < len(candidates):
        log.warning(
            "only %d of %d training origins are on or after the first purchase%s; using those",
            len(origins), len(candidates),
            f" + {cfg.min_history_days} days" if cfg.min_history_days else "",
        )  # fmt: skip
    return Plan(cutoff_day, H, origins, first_day, last_day, label_horizon_days=label)


@dataclass(frozen=True)
class TrainingSet:
    """Features and labels stacked over the origins of a plan.

    Attributes
    ----------
    frame : DataFrame
        Indexed by ``customer_id`` (repeated across origins), with the columns of
        :func:`training_set_schema`; rows ordered by origin, then customer.
    btyd : dict of date to BTYDParams
        The BTYD parameters fitted at each origin.
    feature_set_id : str
    """

    frame: pd.DataFrame
    btyd: dict[dt.date, BTYDParams]
    feature_set_id: str

    def split(self, config: FeatureConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Feature columns (as declared for ``config``), and the label + ``cutoff`` columns."""
        labels = [s.name for s in LABEL_SCHEMA] + [CUTOFF_COLUMN.name]
        return self.frame[feature_names(config)], self.frame[labels]


def _origin_frames(
    tables: Tables, *, origins: Sequence, horizon_days: int, config: FeatureConfig, churn_definition: str
) -> Iterator[tuple[dt.date, pd.DataFrame, BTYDParams]]:
    """Per origin (oldest first): the origin, its rows (features, labels, ``cutoff``) and its BTYD fit."""
    specs = training_set_schema(config)
    # Each origin is a feature build and a BTYD fit: seconds apiece on a large book. The bar shows
    # where INFO logging is on (the command line's default), like the steps around it.
    bar = tqdm(origins, desc="training origins", unit="origin", leave=False, disable=not log.isEnabledFor(logging.INFO))
    for origin in (parse_cutoff(o) for o in bar):
        # Built by a function and yielded unnamed: this generator keeps no reference to an origin's
        # history, feature columns, labels or rows while the caller holds its rows and while the
        # next origin is built (issue 13: the refit's peak).
        yield (origin, *_origin_frame(tables, origin, specs=specs, horizon_days=horizon_days, config=config,
                                      churn_definition=churn_definition))  # fmt: skip


def _origin_frame(
    tables: Tables, origin: dt.date, *, specs, horizon_days: int, config: FeatureConfig, churn_definition: str
) -> tuple[pd.DataFrame, BTYDParams]:
    """One origin's rows (features, labels, ``cutoff``) and its BTYD fit; its history and columns die on return."""
    h = prepare_history(tables, origin)
    columns, btyd = feature_columns(h, config)
    labels = build_labels(tables, cutoff=origin, horizon_days=horizon_days, churn_definition=churn_definition)
    # Same population rule on the same rows: the two indexes are one sorted list of ids.
    if not labels.index.equals(h.ids):
        raise RuntimeError(f"origin {origin}: label rows do not match feature rows")
    columns.update({c: labels[c].to_numpy() for c in labels.columns})
    del labels
    columns["cutoff"] = np.full(h.n, np.datetime64(origin, "D").astype("datetime64[ns]"))
    return assemble(h.ids, specs, columns), btyd


def build_training_set(
    tables: Tables,
    *,
    origins: Sequence,
    horizon_days: int,
    config: FeatureConfig = FeatureConfig(),
    churn_definition: str = "purchase",
) -> TrainingSet:
    """Features and labels stacked over the given origins (plan them with :func:`plan_origins`).

    For each origin the features are built as of the origin (BTYD parameters fitted on the history
    up to that origin only) and joined with the labels of its window; the caller makes sure that
    the windows end where training may look (the plan does). :func:`build_training_matrix` builds
    the same rows in a fraction of the memory, for fitting.

    Parameters
    ----------
    tables : Tables
    origins : sequence of date-like
        Oldest first.
    horizon_days : int
        Label window length H.
    config : FeatureConfig
    churn_definition : {"purchase", "cancel"}

    Returns
    -------
    TrainingSet

    Raises
    ------
    ValueError
        If an origin precedes every purchase (no customer is known there) or a BTYD fit fails.
    """
    frames, params = [], {}
    for origin, frame, btyd in _origin_frames(
        tables, origins=origins, horizon_days=horizon_days, config=config, churn_definition=churn_definition
    ):
        frames.append(frame)
        params[origin] = btyd
    return TrainingSet(pd.concat(frames, axis=0), params, feature_set_id(config))


@dataclass(frozen=True)
class TrainingMatrix:
    """The rows of :func:`build_training_set` as one encoded float32 matrix, for fitting.

    Why a second form: the stacked frame holds every feature in 64 bits and the boosters need
    an encoded copy of it, which made memory grow at about 2.3 GB per 100,000 customers with 13
    origins (issue 13). Here each origin's frame is encoded as soon as it is built and freed,
    so the matrix (4 bytes per value, rows ordered by origin then customer, as the frame) is the
    only copy. float32 is what LightGBM bins in anyway (its histogram bins are built from the
    sampled values; a float64 value at serving falls in the bin of its float32 rounding, since bin
    bounds lie half-way between distinct training values).

    Attributes
    ----------
    matrix : ndarray of float32, shape (n_rows, n_features)
        Columns in ``encoder.columns`` order; categorical columns hold the encoder's codes.
    encoder : training.models.FeatureEncoder
        Fitted on the levels of every origin (the same levels as ``FeatureEncoder.fit`` on the frame).
    labels : DataFrame
        Index ``customer_id`` (repeated across origins); the label columns and ``cutoff``.
    offset_features : DataFrame
        The BTYD offset features (:data:`training.config.BTYD_OFFSET_FEATURES`) in float64, where
        the feature set has them: the boosters' start and the degenerate-origin check read them
        at full precision.
    btyd : dict of date to BTYDParams
    feature_set_id : str
    """

    matrix: np.ndarray
    encoder: FeatureEncoder
    labels: pd.DataFrame
    offset_features: pd.DataFrame
    btyd: dict[dt.date, BTYDParams]
    feature_set_id: str

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, keep: np.ndarray | None) -> TrainingMatrix:
        """The matrix restricted to the rows where ``keep`` is true (``None``: all of them).

        A contiguous run of rows (e.g. the first origins left out) is a view; other selections copy.
        """
        if keep is None or keep.all():
            return self
        index = row_selection(keep)
        return TrainingMatrix(
            self.matrix[index], self.encoder, self.labels.iloc[index], self.offset_features.iloc[index],
            self.btyd, self.feature_set_id,
        )  # fmt: skip


def build_training_matrix(
    tables: Tables,
    *,
    origins: Sequence,
    horizon_days: int,
    config: FeatureConfig = FeatureConfig(),
    churn_definition: str = "purchase",
    exclude_features: Sequence[str] = (),
) -> TrainingMatrix:
    """The rows of :func:`build_training_set`, encoded origin by origin into one float32 matrix.

    Parameters
    ----------
    tables, origins, horizon_days, config, churn_definition
        As :func:`build_training_set`.
    exclude_features : sequence of str
        Feature columns the models do not see (``TrainingConfig.exclude_features``): not in the matrix.

    Returns
    -------
    TrainingMatrix
        Peak memory: the matrix plus one origin's frame.

    Raises
    ------
    ValueError
        As :func:`build_training_set`.
    """
    specs = {s.name: s for s in feature_schema(config)}
    excluded = set(exclude_features)
    columns = [name for name in feature_names(config) if name not in excluded]
    categorical = [c for c in columns if specs[c].dtype == "str"]
    numeric = [i for i, c in enumerate(columns) if c not in set(categorical)]
    numeric_names = [columns[i] for i in numeric]
    label_columns = [s.name for s in LABEL_SCHEMA] + [CUTOFF_COLUMN.name]
    offset_columns = [c for c in BTYD_OFFSET_FEATURES if c in specs]
    blocks, label_frames, offset_frames, params = [], [], [], {}
    for origin, frame, btyd in _origin_frames(
        tables, origins=origins, horizon_days=horizon_days, config=config, churn_definition=churn_definition
    ):
        block = np.full((len(frame), len(columns)), np.nan, dtype=np.float32)
        block[:, numeric] = frame[numeric_names].to_numpy(dtype=np.float32, na_value=np.nan)
        blocks.append((block, frame[categorical]))
        label_frames.append(frame[label_columns])
        offset_frames.append(frame[offset_columns].astype("float64"))
        params[origin] = btyd
        del frame
    # The levels seen at every origin, by FeatureEncoder.fit's own rule (only the few string columns).
    strings = pd.concat([s for _, s in blocks]) if blocks else pd.DataFrame({c: pd.array([], dtype="str") for c in categorical})
    categories = FeatureEncoder.fit(strings).categories
    del strings
    encoder = FeatureEncoder(columns=tuple(columns), categories=categories)
    matrix = np.empty((sum(len(b) for b, _ in blocks), len(columns)), dtype=np.float32)
    start = 0
    coded = [columns.index(c) for c in categorical if categories[c]]  # as FeatureEncoder.codes
    while blocks:
        block, strings = blocks.pop(0)  # freed as soon as copied
        if coded:
            block[:, coded] = encoder.codes(strings)
        matrix[start : start + len(block)] = block
        start += len(block)
    return TrainingMatrix(
        matrix, encoder, pd.concat(label_frames), pd.concat(offset_frames), params, feature_set_id(config)
    )


#: Range of the BG/NBD shape parameters (r, a, b) of an identified fit (:func:`unidentified_fit`).
SHAPE_RANGE = (1e-3, 1e3)


def unidentified_fit(params: BTYDParams) -> str | None:
    """Why the BG/NBD fit ``params`` is unidentified, or None when it is not.

    Rule: a shape parameter (r, a or b; unitless, unlike the scales alpha and v) outside
    :data:`SHAPE_RANGE`. Weeks after the first purchases nobody has had time to drop out and the
    likelihood is flat in the dropout process: on CDNOW the fits of the first six weeks put a or b
    at 1e-8 .. 3e-4 (every customer immortal, Beta(a, b) a point mass; one fit has r = 6e7), and
    from 1997-02-17 (seven weeks in) a and b are 0.08 .. 0.8, as on the whole history
    (Fader, Hardie and Lee 2005: r 0.24, a 0.79, b 2.43). Such a fit's forecasts are finite but
    arbitrary. On the CDNOW pseudo-holdouts (``benchmarks/lifetime_experiments.py``, BENCHMARKS.md,
    "Lifetime CLV") leaving those origins out brought the total 3 to 4 points closer to the actual
    at an MAE 0.1 to 0.4 higher; it drops there the same origins as ``min_history_days = 42``, but
    follows the data rather than a calendar (a book whose customers buy daily is identified sooner).

    Parameters
    ----------
    params : BTYDParams

    Returns
    -------
    str or None
        E.g. ``"a = 2.9e-05"``: the first parameter out of range.
    """
    low, high = SHAPE_RANGE
    b = params.bgnbd
    for name, value in (("r", b.r), ("a", b.a), ("b", b.b)):
        if not low <= value <= high:
            return f"{name} = {value:.2g}"
    return None


def drop_degenerate_origins(
    training: pd.DataFrame, *, needed: int, btyd: dict[dt.date, BTYDParams] | None = None
) -> pd.DataFrame:
    """The training set without the origins whose BG/NBD fit is unidentified and the rows whose forecast is not finite.

    Days or weeks after the first purchases the data cannot identify BG/NBD. With ``btyd`` (the
    fit at each origin, :attr:`TrainingSet.btyd`), an origin whose fit :func:`unidentified_fit`
    rejects is dropped whole. An origin where the forecast overflows for half its rows or more is
    dropped whole too; elsewhere a few customers' forecasts can still overflow, and those rows are
    dropped. All of it is said (:func:`degenerate_rows` decides).

    Raises
    ------
    TrainingInputError
        When fewer than ``needed`` origins are left.
    """
    keep = degenerate_rows(training[list(BTYD_OFFSET_FEATURES)], training["cutoff"].to_numpy(), needed=needed, btyd=btyd)
    return training if keep is None else training[keep]


def degenerate_rows(
    offset_features: pd.DataFrame, origin: np.ndarray, *, needed: int, btyd: dict[dt.date, BTYDParams] | None = None
) -> np.ndarray | None:
    """Which training rows :func:`drop_degenerate_origins` keeps: a boolean mask, or None for all.

    Parameters
    ----------
    offset_features : DataFrame
        The BTYD offset features of each row (:data:`training.config.BTYD_OFFSET_FEATURES`).
    origin : ndarray of datetime64
        Each row's origin (``cutoff``).
    needed : int
        Origins the fit needs.
    btyd : dict of date to BTYDParams, optional
        The fit at each origin; origins :func:`unidentified_fit` rejects are dropped whole.

    Raises
    ------
    TrainingInputError
        When fewer than ``needed`` origins are left.
    """
    finite = np.isfinite(offset_features.to_numpy(dtype=float)).all(axis=1)
    if finite.all() and not any(unidentified_fit(params) for params in (btyd or {}).values()):
        return None
    degenerate = degenerate_origins(pd.Series(~finite).groupby(origin).mean(), needed=needed, btyd=btyd)
    whole = np.isin(origin, degenerate)
    keep = finite & ~whole
    scattered = int((~finite & ~whole).sum())
    if scattered:
        log.warning("%d training rows with a non-finite BG/NBD forecast dropped (of %d)", scattered, len(origin))
    return keep


def degenerate_origins(share_bad: pd.Series, *, needed: int, btyd: dict[dt.date, BTYDParams] | None = None) -> np.ndarray:
    """The origins :func:`degenerate_rows` leaves out whole, said in the log.

    The rule, shared with the cluster path (:mod:`serving.cluster`), which computes ``share_bad``
    as a reduction: an origin whose BG/NBD fit :func:`unidentified_fit` rejects, or where half its
    rows or more have a non-finite BTYD forecast.

    Parameters
    ----------
    share_bad : Series
        Share of the rows with a non-finite BTYD offset feature, indexed by origin (datetime64),
        one entry per origin with rows.
    needed : int
        Origins the fit needs.
    btyd : dict of date to BTYDParams, optional
        The fit at each origin (None: identification is not checked).

    Returns
    -------
    ndarray of datetime64
        The origins left out, sorted.

    Raises
    ------
    TrainingInputError
        When fewer than ``needed`` origins are left.
    """
    reasons = {o: why for o, params in (btyd or {}).items() if (why := unidentified_fit(params)) is not None}
    if reasons:
        log.warning(
            "BG/NBD unidentified at training origin(s) %s; those origins are left out",
            ", ".join(f"{o} ({why})" for o, why in sorted(reasons.items())),
        )
    unidentified = pd.DatetimeIndex([pd.Timestamp(o) for o in reasons]).to_numpy()
    degenerate = np.union1d(share_bad.index[(share_bad >= 0.5).to_numpy()].to_numpy(), unidentified)
    left = int((~np.isin(share_bad.index.to_numpy(), degenerate)).sum())
    days = ", ".join(str(pd.Timestamp(o).date()) for o in degenerate)
    if left < needed:
        raise TrainingInputError(
            f"the BG/NBD fit is degenerate (unidentified, or non-finite forecasts) at training origin(s) {days}, which leaves "
            f"{left} origin(s), {needed} needed: use a later cutoff or fewer, later origins"
        )
    if len(degenerate):
        log.warning(
            "BG/NBD fit degenerate at training origin(s) %s (unidentified, or non-finite forecasts for most "
            "customers); training on the other %d origins",
            days, left,
        )  # fmt: skip
    return degenerate
