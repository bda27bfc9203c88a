"""The churn and spend models: LightGBM boosted from the BG/NBD + Gamma-Gamma forecast.

- churn: p = P(no purchase in the next H days), a LightGBM classifier (optionally calibrated by
  isotonic regression on a time-held-out slice, the latest training origins);
- spend: s = E[spend in the next H days | a purchase in them], a LightGBM regressor trained on the
  rows whose label window has a purchase;
- expected spend over H: (1 − p) · s.

With ``btyd_offset`` (the default) both boosters start from the BTYD forecast of the row rather
than from a constant: the churn classifier's raw score is added to the log-odds of BG/NBD's
P(no purchase in H), the spend regressor's to the log of BTYD's spend given a purchase. BTYD
extrapolates with the customer's age by construction; the trees only learn corrections, which is
what lets models trained on young customers (early origins) forecast the same customers older.

:class:`ClvModels` is an estimator (``fit`` returns self, learned state ends in ``_``) and also the
object serving predicts with, rebuilt from MLflow by :func:`training.registry.load_champion`
through :meth:`ClvModels.from_parts`. Everything serving needs to encode features exactly as in
training (column order, category levels, calibration map) is in :meth:`ClvModels.metadata`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.preprocessing import OrdinalEncoder
from tqdm.auto import tqdm

from training.config import BTYD_OFFSET_FEATURES, LightGBMParams, TrainingConfig
from training.treeshap import TreeShap

log = logging.getLogger(__name__)

# Bounds of the BTYD offsets: a probability of exactly 0 or 1, or a spend of 0, has no log.
_MIN_PROBABILITY = 1e-6
_MIN_SPEND = 1e-2
_SMALL_FRAME = 16  # rows up to which FeatureEncoder.matrix converts through one object array
_LOG_LINK = frozenset({"tweedie", "gamma", "poisson"})  # objectives whose prediction is exp(raw score)


OUTPUT_COLUMNS = ("churn_probability", "spend_if_active", "expected_spend")
#: Gamma-Gamma expected value of one order: the floor of spend_if_active when the feature is there.
ORDER_VALUE_FEATURE = "btyd_expected_order_value"


class TrainingDataError(ValueError):
    """The training rows cannot train a model (e.g. a single churn class); the message says why."""


# --------------------------------------------------------------------------- feature encoding


class FeatureEncoder:
    """Turns a feature frame into the numeric matrix the boosters were trained on.

    Numeric and boolean columns become float64. String / categorical columns become the integer
    code of their level among ``categories[column]`` (levels seen in training, sorted), and NaN
    for a level never seen in training, which LightGBM treats as missing rather than guessing; the
    codes come from scikit-learn's :class:`~sklearn.preprocessing.OrdinalEncoder` (unknown and
    missing values encoded as NaN). Codes rather than pandas ``category`` dtype keep the MLflow
    signature plain numeric and make the encoding explicit, so serving cannot drift from training.

    Parameters
    ----------
    columns : tuple of str
        Feature columns in model order.
    categories : dict of str to tuple of str
        Levels of each categorical column, in code order.
    """

    def __init__(self, columns: tuple[str, ...], categories: dict[str, tuple[str, ...]]):
        self.columns = tuple(columns)
        self.categories = {k: tuple(v) for k, v in categories.items()}
        self._categorical = [c for c in self.columns if c in self.categories]
        self._numeric = [i for i, c in enumerate(self.columns) if c not in self.categories]
        self._numeric_names = [self.columns[i] for i in self._numeric]
        # A categorical column without any level in training encodes every value as unknown (NaN);
        # OrdinalEncoder needs at least one level per column, so it only sees the others.
        self._coded = [c for c in self._categorical if self.categories[c]]
        self._coded_positions = [self.columns.index(c) for c in self._coded]
        self._empty_positions = [self.columns.index(c) for c in self._categorical if not self.categories[c]]
        self._ordinal = None
        if self._coded:
            levels = [list(self.categories[c]) for c in self._coded]
            self._ordinal = OrdinalEncoder(
                categories=[np.asarray(lv, dtype=object) for lv in levels],
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
                dtype=np.float64,
            )
            # The levels are given: fitting only checks them (on one row of first levels).
            first = [[lv[0] for lv in levels]]
            self._ordinal.fit(np.asarray(first, dtype=object))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureEncoder) and (self.columns, self.categories) == (other.columns, other.categories)

    def __repr__(self) -> str:
        return f"FeatureEncoder(columns={len(self.columns)}, categorical={self._categorical})"

    @classmethod
    def fit(cls, features: pd.DataFrame) -> FeatureEncoder:
        """Record the columns of ``features`` and the levels of its non-numeric columns."""
        categories: dict[str, tuple[str, ...]] = {}
        for name in features.columns:
            col = features[name]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                continue
            if pd.api.types.is_datetime64_any_dtype(col) or pd.api.types.is_timedelta64_dtype(col):
                raise TrainingDataError(
                    f"feature column {name!r} has dtype {col.dtype}: features must be numeric or categorical"
                )
            levels = pd.Series(col.dropna().astype(str).unique()).sort_values(kind="stable")
            categories[str(name)] = tuple(levels.tolist())
        return cls(columns=tuple(str(c) for c in features.columns), categories=categories)

    @property
    def categorical_columns(self) -> list[str]:
        return list(self._categorical)

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """Encoded float64 frame with exactly ``columns``, in order, and the same index."""
        return pd.DataFrame(self.matrix(features), index=features.index, columns=list(self.columns))

    def matrix(self, features: pd.DataFrame, *, dtype=np.float64) -> np.ndarray:
        """The encoded matrix, columns in model order (the fast path of :meth:`transform`).

        ``dtype`` float32 halves the memory of a training matrix (category codes are exact in it).
        """
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise KeyError(f"feature columns missing: {missing}")
        out = np.empty((len(features), len(self.columns)), dtype=dtype)
        numeric, numeric_names = self._numeric, self._numeric_names
        try:
            if len(features) <= _SMALL_FRAME:
                # A request's few rows: one object array of the whole frame, then the numeric
                # columns cast, is 6x cheaper than selecting them as a frame first.
                positions = features.columns.get_indexer(numeric_names)
                out[:, numeric] = features.to_numpy(dtype=object)[:, positions].astype(dtype)
            else:
                # One block conversion for the numeric columns: per-column conversion is slower.
                out[:, numeric] = features[numeric_names].to_numpy(dtype=dtype, na_value=np.nan)
        except (TypeError, ValueError):
            block = features[numeric_names].apply(pd.to_numeric, errors="raise")
            out[:, numeric] = block.to_numpy(dtype=dtype, na_value=np.nan)
        if self._ordinal is not None:
            out[:, self._coded_positions] = self.codes(features)
        out[:, self._empty_positions] = np.nan
        return out

    def codes(self, features: pd.DataFrame) -> np.ndarray:
        """Codes of the categorical columns that have levels, shape (n_rows, n_coded), float64.

        NaN for a missing value or a level not seen in training.
        """
        if self._ordinal is None:
            return np.empty((len(features), 0))
        values = np.column_stack(
            [features[c].astype("string").to_numpy(dtype=object, na_value=np.nan) for c in self._coded]
        )
        return self._ordinal.transform(values)

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "categories": {k: list(v) for k, v in self.categories.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureEncoder:
        return cls(
            columns=tuple(data["columns"]),
            categories={k: tuple(v) for k, v in data["categories"].items()},
        )


# --------------------------------------------------------------------------- estimators


def lightgbm_params(params: LightGBMParams, *, seed: int, num_threads: int) -> dict:
    """Keyword arguments of ``LGBMClassifier`` / ``LGBMRegressor`` for one model.

    ``deterministic`` + ``force_col_wise`` + a fixed thread count make two fits on the same data
    bit-identical; LightGBM otherwise picks row- or column-wise histograms by timing.
    """
    return {
        "n_estimators": params.num_boost_round,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "subsample": params.subsample,
        "subsample_freq": params.subsample_freq,
        "colsample_bytree": params.colsample_bytree,
        "reg_lambda": params.reg_lambda,
        "max_bin": params.max_bin,
        "min_split_gain": params.min_split_gain,
        "random_state": seed,
        "n_jobs": num_threads,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }


class _RoundsProgress:
    """LightGBM callback: one step of a tqdm bar per boosting round (``order`` runs it before early stopping)."""

    order = 10

    def __init__(self, bar) -> None:
        self.bar = bar

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.bar.update(1)


@contextlib.contextmanager
def _rounds_bar(name: str, rounds: int) -> Iterator[_RoundsProgress]:
    """A bar over a booster's rounds while INFO logging is on (the command line's default), as for the origins.

    A fit takes tens of seconds on a large book; the bar says it is moving. It ends early when
    early stopping does, and is removed when the fit ends.
    """
    bar = tqdm(total=rounds, desc=f"fitting the {name}", unit="round", leave=False,
               disable=not log.isEnabledFor(logging.INFO))  # fmt: skip
    try:
        yield _RoundsProgress(bar)
    finally:
        bar.close()


class ClvModels:
    """Churn classifier + spend regressor (+ churn calibration) on one feature encoding.

    Parameters
    ----------
    training : TrainingConfig
        Hyperparameters, spend objective, early stopping, seed and threads.

    Attributes
    ----------
    encoder_ : FeatureEncoder
        Columns and category levels seen in training.
    churn_model_ : lightgbm.LGBMClassifier
        Raw churn classifier (class 1 = churned).
    spend_model_ : lightgbm.LGBMRegressor
        Spend-if-active regressor.
    calibration_ : tuple of (ndarray, ndarray) or None
        Isotonic map from raw to calibrated churn probability as (thresholds, values), applied by
        linear interpolation and clipped at the ends; ``None`` when there was no validation slice.
    best_iterations_ : dict
        Trees kept per model after early stopping.
    btyd_offset_ : bool
        Whether both boosters add their raw score to the BTYD offsets (:func:`btyd_offsets`).
    """

    def __init__(self, *, training: TrainingConfig | None = None):
        self.training = training

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        features: pd.DataFrame,
        *,
        churned: np.ndarray | pd.Series,
        spend: np.ndarray | pd.Series,
        origin: np.ndarray | pd.Series,
    ) -> ClvModels:
        """Fit both models on stacked rolling-origin rows.

        Parameters
        ----------
        features : DataFrame
            One row per (customer, origin); feature columns only.
        churned : array of bool
            Churn label of each row (no purchase, or a cancellation, in the row's window).
        spend : array of float
            Spend in the row's label window (may be 0, refunds may make it negative).
        origin : array of datetime
            The row's cutoff. The latest ``validation_cutoffs`` origins are the time-held-out
            slice for early stopping and calibration.

        Returns
        -------
        self
        """
        cfg = self.training or TrainingConfig()
        self.btyd_offset_ = bool(cfg.btyd_offset)
        churn_offset, spend_offset = self._offsets(features)
        excluded = [c for c in features.columns if c in set(cfg.exclude_features)]
        encoder = FeatureEncoder.fit(features.drop(columns=excluded))
        return self._fit_encoded(
            encoder.matrix(features), encoder, churned=churned, spend=spend, origin=origin,
            offsets=(churn_offset, spend_offset),
        )  # fmt: skip

    def fit_matrix(self, training) -> ClvModels:
        """Fit both models on a :class:`training.training_set.TrainingMatrix` (the memory-light form).

        Same model as :meth:`fit` on the frame of the same rows, up to the float32 rounding of
        the features (the BTYD offsets are read at full precision).

        Parameters
        ----------
        training : TrainingMatrix
            Rows ordered by origin; labels ``churn``, ``spend`` and ``cutoff`` beside.

        Returns
        -------
        self
        """
        cfg = self.training or TrainingConfig()
        self.btyd_offset_ = bool(cfg.btyd_offset)
        labels = training.labels
        return self._fit_encoded(
            training.matrix, training.encoder, churned=labels["churn"].to_numpy(bool),
            spend=labels["spend"].to_numpy(float), origin=labels["cutoff"],
            offsets=self._offsets(training.offset_features),
        )  # fmt: skip

    def _fit_encoded(
        self, X: np.ndarray, encoder: FeatureEncoder, *, churned, spend, origin, offsets: tuple[np.ndarray, np.ndarray]
    ) -> ClvModels:
        """The two boosters on an encoded matrix (rows as ``origin``); see :meth:`fit`."""
        cfg = self.training or TrainingConfig()
        churned = np.asarray(churned, dtype=bool)
        spend = np.asarray(spend, dtype=float)
        origin = pd.to_datetime(np.asarray(origin))
        if not (len(X) == len(churned) == len(spend) == len(origin)):
            raise ValueError("features, churned, spend and origin must have the same length")
        if len(X) == 0:
            raise TrainingDataError("no training rows")
        origins = np.sort(origin.unique())
        valid_origins = origins[len(origins) - cfg.validation_cutoffs :] if cfg.validation_cutoffs else origins[:0]
        is_valid = np.isin(origin, valid_origins)
        is_train = ~is_valid
        if is_valid.any() and not is_train.any():
            raise TrainingDataError(
                f"{len(origins)} training origin(s) but validation_cutoffs={cfg.validation_cutoffs}: "
                "nothing left to train on"
            )
        for name, mask in (("training", is_train), ("validation", is_valid)):
            if mask.any() and np.unique(churned[mask]).size < 2:
                raise TrainingDataError(
                    f"the {name} rows have a single churn class ({'all churned' if churned[mask].all() else 'none churned'}); "
                    "use more data, a longer horizon or other cutoffs"
                )
        self._explainers = None
        churn_offset, spend_offset = offsets
        if self.btyd_offset_ and not (np.isfinite(churn_offset).all() and np.isfinite(spend_offset).all()):
            raise TrainingDataError("btyd_offset: the BTYD features have missing or infinite values")
        self.encoder_ = encoder
        cats = encoder.categorical_columns or "auto"
        names = {"feature_name": list(encoder.columns)}
        # The latest origins are the last rows: the two slices are views, not copies.
        train_rows, valid_rows = row_selection(is_train), row_selection(is_valid)

        # Churn classifier, early-stopped on the time-held-out slice.
        self.churn_model_ = lgb.LGBMClassifier(
            objective="binary", **lightgbm_params(cfg.churn_params, seed=cfg.seed, num_threads=cfg.num_threads)
        )
        with _rounds_bar("churn model", self.churn_model_.n_estimators) as bar:
            self.churn_model_.fit(
                X[train_rows], churned[is_train].astype(int), categorical_feature=cats, **names,
                **self._init_score(churn_offset, is_train),
                **self._early_stopping(X[valid_rows], churned[is_valid].astype(int), cfg, churn_offset, is_valid, bar),
            )

        # Optional isotonic calibration on the same slice (the latest origins are the closest to
        # the prediction date, but their customers are still younger than at the prediction date).
        self.calibration_ = None
        if is_valid.any() and cfg.churn_calibration == "isotonic":
            raw = self._churn_raw_probability(X[valid_rows], churn_offset[is_valid])
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            iso.fit(raw, churned[is_valid].astype(float))
            self.calibration_ = (np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))

        # Spend regressor on the rows with a purchase in their window.
        active = ~churned
        y_spend = self._spend_target(spend, cfg)
        tr, va = is_train & active, is_valid & active
        if not tr.any():
            raise TrainingDataError("no training row has a purchase in its label window: the spend model has nothing to learn")
        self.spend_model_ = lgb.LGBMRegressor(**self._spend_objective(cfg), **lightgbm_params(
            cfg.spend_params, seed=cfg.seed, num_threads=cfg.num_threads
        ))
        with _rounds_bar("spend model", self.spend_model_.n_estimators) as bar:
            self.spend_model_.fit(
                X[tr], y_spend[tr], categorical_feature=cats, **names,
                **self._init_score(spend_offset, tr),
                **self._early_stopping(X[va], y_spend[va], cfg, spend_offset, va, bar),
            )
        self.best_iterations_ = {
            "churn": int(self.churn_model_.best_iteration_ or self.churn_model_.n_estimators),
            "spend": int(self.spend_model_.best_iteration_ or self.spend_model_.n_estimators),
        }
        self.horizon_days_ = cfg.horizon_days
        return self

    def _offsets(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per-row start of the churn and spend boosters: the BTYD offsets, or 0 without them."""
        if not self.btyd_offset_:
            return np.zeros(len(features)), np.zeros(len(features))
        return btyd_offsets(features)

    def _init_score(self, offset: np.ndarray, rows: np.ndarray) -> dict:
        return {"init_score": offset[rows]} if self.btyd_offset_ else {}

    def _early_stopping(
        self, X_valid: pd.DataFrame, y_valid: np.ndarray, cfg: TrainingConfig, offset: np.ndarray, rows: np.ndarray,
        progress: _RoundsProgress,
    ) -> dict:  # fmt: skip
        if len(X_valid) == 0 or cfg.early_stopping_rounds == 0:
            return {"callbacks": [progress]}
        return {
            "eval_X": (X_valid,),
            "eval_y": (y_valid,),
            **({"eval_init_score": [offset[rows]]} if self.btyd_offset_ else {}),
            "callbacks": [
                progress, lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
            ],
        }

    def _churn_raw_probability(self, X: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Churn probability before calibration: sigmoid(booster raw score + offset)."""
        return expit(_booster_predict(self.churn_model_, X, raw_score=True) + offset)

    @staticmethod
    def _spend_objective(cfg: TrainingConfig) -> dict:
        if cfg.spend_objective == "tweedie":
            return {"objective": "tweedie", "tweedie_variance_power": cfg.tweedie_variance_power}
        return {"objective": cfg.spend_objective}

    @staticmethod
    def _spend_target(spend: np.ndarray, cfg: TrainingConfig) -> np.ndarray:
        # Tweedie needs y >= 0 and gamma y > 0: a window whose refunds outweigh its purchases is
        # worth 0 to the forecast, and gamma gets the smallest positive spend seen instead of 0.
        y = np.maximum(spend, 0.0)
        if cfg.spend_objective == "gamma":
            positive = y[y > 0]
            y = np.where(y > 0, y, positive.min() if positive.size else 1e-6)
        return y

    # -- prediction -------------------------------------------------------------------------------

    @classmethod
    def from_parts(
        cls,
        *,
        encoder: FeatureEncoder,
        churn_model: lgb.LGBMClassifier,
        spend_model: lgb.LGBMRegressor,
        calibration: tuple[np.ndarray, np.ndarray] | None,
        horizon_days: int,
        btyd_offset: bool = False,
        training: TrainingConfig | None = None,
    ) -> ClvModels:
        """Rebuild fitted models from their parts (as stored in MLflow)."""
        self = cls(training=training)
        self.btyd_offset_ = bool(btyd_offset)
        self._explainers = None
        self.encoder_ = encoder
        self.churn_model_ = churn_model
        self.spend_model_ = spend_model
        self.calibration_ = None if calibration is None else (np.asarray(calibration[0], float), np.asarray(calibration[1], float))
        self.horizon_days_ = int(horizon_days)
        self.best_iterations_ = {
            "churn": int(getattr(churn_model, "best_iteration_", 0) or churn_model.n_estimators),
            "spend": int(getattr(spend_model, "best_iteration_", 0) or spend_model.n_estimators),
        }
        return self

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """The encoded model input (what the MLflow signature describes)."""
        return self.encoder_.transform(features)

    def calibrate(self, raw_probability: np.ndarray) -> np.ndarray:
        """Apply the isotonic map (identity when there is none)."""
        if self.calibration_ is None:
            return np.asarray(raw_probability, float)
        x, y = self.calibration_
        return np.interp(raw_probability, x, y)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Churn probability, spend if active and expected spend over the horizon.

        Returns
        -------
        DataFrame
            Same index as ``features``; ``churn_probability`` in [0, 1], ``spend_if_active`` and
            ``expected_spend`` = (1 − churn_probability) · spend_if_active, in currency units.
        """
        X = self.encoder_.matrix(features)
        churn_raw = _booster_predict(self.churn_model_, X, raw_score=True)
        spend = _booster_predict(self.spend_model_, X)  # LightGBM applies the objective's link
        return self._predictions(features, churn_raw, spend)

    def predict_and_explain(self, features: pd.DataFrame, *, top_k: int = 3) -> tuple[pd.DataFrame, list[dict]]:
        """:meth:`predict` and :meth:`explain` from one pass over the trees.

        The boosters' raw scores come from the explainers (the sum of the leaves each row
        reaches, the same as LightGBM's up to float rounding), so a request with drivers walks
        the trees once.
        """
        X = self.encoder_.matrix(features)
        raw, contributions = {}, {}
        for key, explainer in self.explainers().items():
            raw[key], contributions[key] = explainer.raw_score_and_contributions(X)
        spend = raw["spend"]
        if self.explainers()["spend"].objective in _LOG_LINK:
            spend = np.exp(spend)
        drivers = self._drivers(features, raw, contributions, top_k)
        return self._predictions(features, raw["churn"], spend), drivers

    def _predictions(self, features: pd.DataFrame, churn_raw: np.ndarray, spend: np.ndarray) -> pd.DataFrame:
        """Probabilities and spend from the churn raw score and the spend model's output."""
        churn_offset, spend_offset = self._offsets(features)
        p = self.calibrate(expit(churn_raw + churn_offset))
        # exp(raw + offset) = exp(raw) * exp(offset): btyd_offset implies a log-link objective
        # (TrainingConfig.validate), and without it the offset is 0.
        s = np.maximum(spend * np.exp(spend_offset), 0.0)
        if ORDER_VALUE_FEATURE in features.columns:
            # A window with a purchase holds at least one order: the trees' correction may not take
            # the spend below the customer's expected order value.
            s = np.maximum(s, features[ORDER_VALUE_FEATURE].to_numpy(float))
        return pd.DataFrame(
            {"churn_probability": p, "spend_if_active": s, "expected_spend": (1.0 - p) * s},
            index=features.index,
        )

    def explain(self, features: pd.DataFrame, *, top_k: int = 3) -> list[dict[str, list[dict]]]:
        """Per row, the features that move each model's prediction most (exact TreeSHAP values).

        Contributions are in the model's raw score: churn log-odds (positive = more likely to churn)
        and log spend for Tweedie/gamma (positive = more spend). With ``btyd_offset`` they are
        corrections to the BTYD forecast, which is the start of both scores.

        Each driver also has its ``effect`` in the units of the prediction: the change of the
        (calibrated) churn probability, 0-1, or of the spend if active, in currency, that the
        feature's contribution makes, all other contributions kept (the prediction minus the
        prediction without it; effects of several drivers do not add up exactly, the link being
        non-linear). ``base`` gives, per model, the prediction without any feature's contribution:
        the booster's expected value (LightGBM's bias), with the customer's BTYD start under
        ``btyd_offset``.

        Returns
        -------
        list of dict
            One ``{"churn": [...], "spend": [...], "base": {"churn": p, "spend": s}}`` per row,
            each list of ``top_k`` ``{"feature", "value", "contribution", "effect"}`` ordered by
            absolute contribution.
        """
        X = self.encoder_.matrix(features)
        raw, contributions = {}, {}
        for key, explainer in self.explainers().items():
            raw[key], contributions[key] = explainer.raw_score_and_contributions(X)
        return self._drivers(features, raw, contributions, top_k)

    def _served(self, key: str, raw: np.ndarray, offset: np.ndarray, floor: np.ndarray | None = None) -> np.ndarray:
        """The served prediction of model ``key`` from its raw score (rows x any shape; ``offset`` per row).

        ``floor`` (per row, spend only): the least spend if active, one expected order (see
        :meth:`_predictions`), so that effects and base are those of the served prediction.
        """
        per_row = (-1, *([1] * (raw.ndim - 1)))
        shifted = raw + np.asarray(offset, float).reshape(per_row)
        if key == "churn":
            return self.calibrate(expit(shifted))
        spend = np.exp(shifted) if self.explainers()["spend"].objective in _LOG_LINK else shifted
        spend = np.maximum(spend, 0.0)
        return spend if floor is None else np.maximum(spend, np.asarray(floor, float).reshape(per_row))

    def _drivers(
        self, features: pd.DataFrame, raw: dict[str, np.ndarray], contributions: dict[str, np.ndarray], top_k: int
    ) -> list[dict]:
        names = np.asarray(self.encoder_.columns)
        out: list[dict[str, list[dict]]] = [{} for _ in range(len(features))]
        tops = {
            key: (contrib, np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top_k])
            for key, contrib in contributions.items()
        }
        # Raw values of the top columns only: converting the whole frame to objects costs more than
        # the SHAP values of a single row.
        raw_values = {
            j: features[names[j]].to_numpy(dtype=object)
            for j in np.unique(np.concatenate([top.ravel() for _, top in tops.values()]))
        }
        offsets = dict(zip(("churn", "spend"), self._offsets(features), strict=True))
        floors = {"churn": None, "spend": None}
        if ORDER_VALUE_FEATURE in features.columns:
            floors["spend"] = features[ORDER_VALUE_FEATURE].to_numpy(float)
        bases = {}
        for key, (contrib, top) in tops.items():
            # Effects in the prediction's units: the prediction minus the prediction without the driver.
            full = self._served(key, raw[key], offsets[key], floors[key])
            shown = np.take_along_axis(contrib, top, axis=1)
            effect = full[:, None] - self._served(key, raw[key][:, None] - shown, offsets[key], floors[key])
            bases[key] = self._served(key, raw[key] - contrib.sum(axis=1), offsets[key], floors[key])
            for i in range(len(features)):
                out[i][key] = [
                    {
                        "feature": str(names[j]),
                        "value": _plain(raw_values[j][i]),
                        "contribution": float(contrib[i, j]),
                        "effect": float(effect[i, n]),
                    }
                    for n, j in enumerate(top[i])
                ]
        for i in range(len(features)):
            out[i]["base"] = {key: float(bases[key][i]) for key in tops}
        return out

    def explainers(self) -> dict[str, TreeShap]:
        """The TreeSHAP explainer of each booster (built on first use, ~1 s each, then kept).

        Same values as LightGBM's ``pred_contrib=True``, several times faster on batches; the
        service builds them at start so that no request pays for it.
        """
        if getattr(self, "_explainers", None) is None:
            self._explainers = {
                "churn": TreeShap(self.churn_model_.booster_),
                "spend": TreeShap(self.spend_model_.booster_),
            }
        return self._explainers

    def feature_importance(self) -> pd.DataFrame:
        """Total gain of each feature in each model, sorted by churn gain."""
        frame = pd.DataFrame(
            {
                "churn": self.churn_model_.booster_.feature_importance(importance_type="gain"),
                "spend": self.spend_model_.booster_.feature_importance(importance_type="gain"),
            },
            index=pd.Index(self.encoder_.columns, name="feature"),
        )
        return frame.sort_values("churn", ascending=False)

    def metadata(self) -> dict:
        """What serving needs besides the boosters: encoding, calibration map, horizon."""
        return {
            "encoder": self.encoder_.to_dict(),
            "calibration": None
            if self.calibration_ is None
            else {"x": self.calibration_[0].tolist(), "y": self.calibration_[1].tolist()},
            "horizon_days": self.horizon_days_,
            "best_iterations": self.best_iterations_,
            "btyd_offset": self.btyd_offset_,
        }


def row_selection(mask: np.ndarray) -> slice | np.ndarray:
    """``mask`` as a slice when its rows are one contiguous run (indexing then gives a view), else itself."""
    where = np.flatnonzero(mask)
    if len(where) and where[-1] - where[0] + 1 == len(where):
        return slice(int(where[0]), int(where[-1]) + 1)
    return mask if len(where) else slice(0, 0)


def btyd_offsets(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The BTYD start of each booster, per row.

    Returns
    -------
    churn : ndarray
        Log-odds of ``btyd_p_no_purchase`` (BG/NBD's probability of no purchase in H).
    spend : ndarray
        Log of BTYD's spend given a purchase in H, ``btyd_spend_if_active`` (E[spend | a purchase],
        computed given alive so it never collapses when P(alive) is tiny; it used to be
        ``btyd_expected_spend / max(1 - btyd_p_no_purchase, 1e-3)``, which gave a weekly buyer gone
        quiet a few cents).

    Raises
    ------
    KeyError
        If a BTYD column is missing (``btyd_offset`` needs the BTYD feature family).
    """
    missing = [c for c in BTYD_OFFSET_FEATURES if c not in features.columns]
    if missing:
        raise KeyError(f"btyd_offset needs the feature columns {missing}; set training.btyd_offset=false without them")
    p = np.clip(features["btyd_p_no_purchase"].to_numpy(float), _MIN_PROBABILITY, 1.0 - _MIN_PROBABILITY)
    spend_if_active = features["btyd_spend_if_active"].to_numpy(float)
    return np.log(p) - np.log1p(-p), np.log(np.maximum(spend_if_active, _MIN_SPEND))


def _booster_predict(model, X: np.ndarray, **kwargs) -> np.ndarray:
    """``model.predict`` on a plain matrix, straight through the booster.

    The scikit-learn wrapper validates and converts a frame on every call, which costs more than
    the trees for a request of one customer. The booster uses the early-stopping best iteration,
    as the wrapper does; for a binary classifier it returns P(class 1).
    """
    n_jobs = getattr(model, "n_jobs", None)
    if isinstance(n_jobs, int) and n_jobs > 0:
        kwargs.setdefault("num_threads", n_jobs)
    return model.booster_.predict(X, **kwargs)


def _plain(value):
    """JSON-friendly scalar."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value if isinstance(value, (int, float, str, bool)) else str(value)
