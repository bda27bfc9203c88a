"""``clvcast budget`` on scores of a 91-day champion, with the default config (which says 182 days).

The horizon and the CLV arithmetic of the finance outputs are the scores' own (their scoring run);
the config only decides the target LTV:CAC and the referral credit, and must agree with the scores on
the arithmetic. A small champion is trained once for the module in its own MLflow store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.io import load_tables
from features.synthetic import generate, write_book
from segment_rules import check_segment_rules
from serving import segments as SG
from serving.cli import main
from serving.finance import expected_forecast
from serving.finance.acquisition import acquisition_budget
from serving.finance.forecast import fit_forecast_shape, forecast_calendar
from serving.scores import read_scores
from serving.scoring import score
from test_registry import SMALL
from training.config import load_config
from training.pipeline import train
from training.registry import load_champion

pytestmark = pytest.mark.slow

HORIZON_DAYS = 91
AS_OF = "2023-12-31"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A directory with the book (``book/``) and the 91-day champion's scores (``scores.parquet``)."""
    root = tmp_path_factory.mktemp("budget91")
    write_book(generate(1500, seed=5, start="2022-01-01", end="2023-12-31"), root / "book")
    # A small, fast training run (the budget's plumbing is under test, not the models), in a store of its own.
    config = load_config(**{**SMALL, "horizon_days": HORIZON_DAYS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        train(load_tables(root / "book").tables, config=config, promote="force")
        score(root / "book", cutoff=AS_OF, out=root / "scores.parquet", champion=load_champion())
    return root


def _budget(capsys, work: Path, out: Path, *flags):
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:  # the scores' pair gives the new-customer CLV
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        code = main(["--quiet", "budget", "--data", str(work / "book"), "--scores", str(work / "scores.parquet"),
                     "--out", str(out), *map(str, flags)])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_budget_uses_the_horizon_of_the_scores(capsys, work):
    assert load_config().training.horizon_days == 182  # what a default would have said
    scores = read_scores(work / "scores.parquet")
    assert scores.run.horizon_days == HORIZON_DAYS
    out = work / "budget"
    code, stdout, err = _budget(capsys, work, out)
    assert code == 0, err
    assert f"as of {scores.run.as_of}, horizon 91 days: " in stdout.splitlines()[0]  # the headline
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "period of 91 days" in page and "horizon_days=91," in page
    # The champion's training run logged the BTYD diagnostics: the report draws them, named by that run.
    assert 'id="btyd-diagnostics"' in page and scores.run.run_id in page
    assert page.count('src="data:image/png;base64,') == 10

    # The forecast is the arithmetic of a 91-day horizon: recomputed from the scores with H = 91 it
    # agrees to rounding, with H = 182 it does not.
    forecast = pd.read_csv(out / "forecast.csv")
    frame = scores.frame
    shape = fit_forecast_shape(
        load_tables(work / "book").tables, frame["customer_id"], pd.Timestamp(scores.run.as_of),
        time_unit_days=scores.run.btyd.time_unit_days,
    )  # fmt: skip

    def revenue(horizon_days):
        return expected_forecast(
            frame["churn_probability"], frame["spend_if_active"], p_alive=frame["p_alive"], horizon_days=horizon_days,
            margin=scores.run.clv.gross_margin, cost_to_serve=scores.run.clv.cost_to_serve,
            end_days=forecast_calendar(scores.run.as_of, 12)["end_day"], shape=shape,
        )[0]  # fmt: skip

    np.testing.assert_allclose(forecast["expected_revenue"], revenue(HORIZON_DAYS), rtol=0, atol=0.005)  # cents
    assert not np.allclose(forecast["expected_revenue"], revenue(182), rtol=0.01)

    # New-customer CLV: the scores' champion's value from acquisition for every channel of the scores,
    # and channels.csv's acquisition decision is what POST /acquisition_budget answers at its mean CAC.
    new = pd.read_csv(out / "new_customer_clv.csv", index_col="channel")
    channels = pd.read_csv(out / "channels.csv")
    assert set(new["basis"]) == {"process"} and sorted(new.index) == sorted(frame["channel"].dropna().unique())
    # An 80 % interval of a skewed value: its upper end may lie below the mean.
    assert (new["new_customer_clv_lower"] <= new["new_customer_clv_upper"]).all()
    assert (new["new_customer_clv_lower"] <= new["new_customer_clv"]).all()
    answers = acquisition_budget(
        [{"channel": c, "cac": cac} for c, cac in zip(channels["channel"], channels["mean_cac"])], new,
        target_ratio=load_config().clv.target_ltv_cac,
    )
    assert channels["acquisition_recommendation"].tolist() == [a["recommendation"] for a in answers]
    np.testing.assert_allclose(channels["new_customer_clv"], [a["new_customer_clv"] for a in answers])


def test_segments_of_the_scored_book_meet_their_rules(work):
    # The scores' RFM segments against the scored buyers (the reference `clvcast score` used).
    frame = read_scores(work / "scores.parquet").frame
    buyers = frame[frame["rfm_segment"].isin(SG.RFM_SEGMENTS)].reset_index(drop=True)
    sizes = check_segment_rules(SG.SegmentReference.from_scores(buyers), buyers)
    assert sum(sizes.values()) == len(buyers) > 0
    assert buyers.loc[buyers["rfm_segment"] == "cannot_lose", "churn_probability"].lt(SG.LOST_CHURN_PROBABILITY).all()


def test_budget_refuses_a_config_whose_clv_arithmetic_differs_from_the_scores(capsys, work):
    config = work / "other_margin.yaml"
    config.write_text("clv:\n  gross_margin: 0.4\n")
    out = work / "budget_other_margin"
    code, stdout, err = _budget(capsys, work, out, "--config", config)
    assert code == 1 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: scores: computed with other CLV settings"), err
    assert "gross_margin 0.3 (scores) vs 0.4 (budget)" in lines[0] and "re-score" in lines[0]
    assert not list(out.glob("*.csv")) and not (out / "report.html").exists()
