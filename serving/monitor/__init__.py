"""Monitoring of CLV over time: the scoring history, trends, drift, realised performance, alerts, report.

One module per responsibility:

- :mod:`.history`: the history store (a Parquet dataset by as_of and model pair, or SQL tables),
  written by ``clvcast score --history`` and read by the monitor;
- :mod:`.trends`: the book and its segments per scoring date, CLV tier migration, segment moves;
- :mod:`.drift`: PSI and KS of the latest scoring against its models' stored reference;
- :mod:`.performance`: the realised performance of matured scorings (the production backtest);
- :mod:`.alerts`: the crossed thresholds as sentences;
- :mod:`.inputs`: what the monitor reads of the raw tables (:func:`~.inputs.monitor_inputs`), per
  customer, so that the workers of a cluster can read it partition by partition;
- :mod:`.compute`: :func:`compute_monitor`, one monitor run from a history and the data;
- :mod:`.outputs`, :mod:`.report` and ``templates/``: ``summary.json`` and ``report.html``.

The computation and the history are re-exported here; the writers (which load matplotlib and
jinja2) are imported from :mod:`serving.monitor.outputs`.
"""

from serving.monitor.alerts import Alert
from serving.monitor.compute import MonitorResult, compute_monitor
from serving.monitor.history import History, HistoryWrite, append_scores, read_history

__all__ = ["Alert", "History", "HistoryWrite", "MonitorResult", "append_scores", "compute_monitor", "read_history"]
