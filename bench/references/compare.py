"""Does a reference produce the same sessions as intentlake's silver.sessions? Row by row, column by column."""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY = ("anonymous_id", "session_start")  # one session per device and start, in every implementation
# What must agree before a reference's time counts: the session itself, then its core features.
SESSION_COLUMNS = ("session_id", "session_end", "event_count", "sessionized_by")
FEATURE_COLUMNS = (
    "page_depth", "page_views", "dwell_seconds", "dwell_total_seconds", "engaged_seconds", "max_scroll_depth",
    "scrolls", "clicks", "product_views", "distinct_products", "cart_adds", "wishlist_adds", "searches",
    "checkout_started", "converted", "duration_seconds",
)  # fmt: skip
FLOAT_TOLERANCE = 1e-6


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.loc[:, [*KEY, *SESSION_COLUMNS, *FEATURE_COLUMNS]].copy()
    for name in ("session_start", "session_end"):
        out[name] = pd.to_datetime(out[name], utc=True).astype("datetime64[us, UTC]")
    for name in ("checkout_started", "converted"):
        out[name] = out[name].astype("boolean").fillna(False).astype(bool)
    return out


def compare_sessions(expected: pd.DataFrame, actual: pd.DataFrame) -> dict:
    """expected: silver.sessions; actual: a reference's sessions. Counts of sessions missing on either side
    and, for sessions on both, of rows differing per column (floats within FLOAT_TOLERANCE)."""
    left, right = _normalised(expected), _normalised(actual)
    both = left.merge(right, on=list(KEY), how="outer", suffixes=("_silver", "_ref"), indicator=True)
    only_silver = int((both["_merge"] == "left_only").sum())
    only_ref = int((both["_merge"] == "right_only").sum())
    matched = both[both["_merge"] == "both"]
    differing: dict[str, int] = {}
    bad = np.zeros(len(matched), dtype=bool)
    for name in (*SESSION_COLUMNS, *FEATURE_COLUMNS):
        a, b = matched[f"{name}_silver"], matched[f"{name}_ref"]
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            x, y = a.astype(float).to_numpy(), b.astype(float).to_numpy()
            diff = ~np.isclose(x, y, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE, equal_nan=True)
        else:
            diff = a.astype(object).to_numpy() != b.astype(object).to_numpy()
        if diff.any():
            differing[name] = int(diff.sum())
        bad |= diff
    mismatches = only_silver + only_ref + int(bad.sum())
    example = None
    if mismatches:
        rows = both[both["_merge"] != "both"].head(1) if only_silver + only_ref else matched[bad].head(1)
        example = {k: str(v) for k, v in rows.iloc[0].items()}
    return {
        "silver_sessions": len(left),
        "reference_sessions": len(right),
        "only_in_silver": only_silver,
        "only_in_reference": only_ref,
        "differing_sessions": int(bad.sum()),
        "differing_by_column": differing,
        "mismatches": mismatches,
        "columns_compared": [*KEY, *SESSION_COLUMNS, *FEATURE_COLUMNS],
        "example": example,
    }
