"""The KPI report's trend plots without Spark: the seeds' target lines are drawn whatever the number of days."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from spark_jobs.gold import kpis

pytestmark = pytest.mark.unit

D = date(2026, 11, 3)
TARGETS = {"micro_conversion_rate": 0.15, "intent_accuracy": 0.85, "trigger_abandonment": 0.40}


def row(day: date, kpi: str, dimension: str, value: float, target: float | None = None) -> dict:
    return {"kpi_date": day, "kpi": kpi, "dimension": dimension, "numerator": 3, "denominator": 5,
            "value": value, "target": target}  # fmt: skip


def kpi_rows(days: list[date], targets: dict[str, list[float | None]] | None = None) -> pd.DataFrame:
    """gold.kpis_daily as render_report reads it: the three headline KPIs per day, and the day's breakdowns."""
    targets = targets or {kpi: [t] * len(days) for kpi, t in TARGETS.items()}
    rows = [row(day, kpi, "all", 0.6, targets[kpi][i]) for kpi in TARGETS for i, day in enumerate(days)]
    last = days[-1]
    rows += [row(last, "segment_size", "Standard", 1.0), row(last, "trigger_abandonment", "exit_intent", 0.5),
             row(last, "engagement_by_hour", "9", 30.0)]  # fmt: skip
    return pd.DataFrame(rows).astype({"value": "float64", "target": "float64"})


def trend_axes(monkeypatch, history: pd.DataFrame) -> list:
    """The trend figure's three panels, as _plots draws them (its figures kept instead of turned into PNGs)."""
    figures = []
    monkeypatch.setattr(kpis, "_png", lambda figure: figures.append(figure) or b"")
    today = history[history.kpi_date == history.kpi_date.max()]
    kpis._plots(history, today, kpis.load_kpi_config())
    return figures[0].axes


def target_line(ax):
    (line,) = [line for line in ax.get_lines() if line.get_label() == "target (seeds)"]
    return line.get_xydata()  # x as plotted (a day's tick position), y in %


def test_a_one_day_trend_still_draws_every_target_line(monkeypatch):
    for ax, (kpi, target) in zip(trend_axes(monkeypatch, kpi_rows([D])), TARGETS.items(), strict=True):
        xy = target_line(ax)
        (tick,) = ax.get_xticks()
        left, right = ax.get_xlim()
        assert xy[:, 0].min() < tick < xy[:, 0].max(), kpi  # a line across the day, not a lone invisible point
        assert xy[:, 0].min() >= left and xy[:, 0].max() <= right, kpi  # and inside the panel
        assert np.allclose(xy[:, 1], 100 * target), kpi
        assert [label.get_text() for label in ax.get_xticklabels()] == ["11-03"]


def test_each_day_is_drawn_against_its_own_target(monkeypatch):
    days = [D - timedelta(days=2), D - timedelta(days=1), D]
    friction = [0.40, 0.36, None]  # moves with its baseline; no baseline, no target
    history = kpi_rows(days, {"micro_conversion_rate": [0.15] * 3, "intent_accuracy": [0.85] * 3,
                              "trigger_abandonment": friction})  # fmt: skip
    ax = trend_axes(monkeypatch, history)[2]
    xy = target_line(ax)
    drawn = [(x0, x1, y0) for (x0, y0), (x1, y1) in itertools.pairwise(xy) if y0 == y1 and x0 < x1]  # NaN != NaN

    for tick, target in zip(ax.get_xticks(), friction, strict=True):
        over_day = [y for x0, x1, y in drawn if x0 < tick < x1]
        assert over_day == ([] if target is None else [pytest.approx(100 * target)])
