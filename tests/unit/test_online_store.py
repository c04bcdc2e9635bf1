"""The online store's pure parts: how a person's hash reads back, and what a run's summary says."""

from __future__ import annotations

import json

import pytest

from spark_jobs.serving.online_store import OnlineStoreRun, SourceRun, decode

pytestmark = pytest.mark.unit


def test_a_person_hash_reads_back_typed_with_content_per_channel_and_no_version_fields():
    raw = {
        "segment": "High Intent", "intent_score": "81.5", "contributions": json.dumps({"cart_add": 40.0}),
        "model_version": "weighted-v1", "sessions": "3", "best_local_hour": "19", "send_confidence": "0.5",
        "consent_marketing": "0", "consent_personalization": "1", "consent_updated_at": "2026-11-02T12:00:00Z",
        "content:email": json.dumps({"rule": "cart_rescue", "cta": "Complete your order"}),
        "v:segment": "4", "v:content:email": "2", "updated_at": "1796468375",
    }  # fmt: skip
    assert decode(raw) == {
        "segment": "High Intent", "intent_score": 81.5, "contributions": {"cart_add": 40.0},
        "model_version": "weighted-v1", "sessions": 3, "best_local_hour": 19, "send_confidence": 0.5,
        "consent_marketing": False, "consent_personalization": True, "consent_updated_at": "2026-11-02T12:00:00Z",
        "content": {"email": {"rule": "cart_rescue", "cta": "Complete your order"}}, "updated_at": 1796468375,
    }  # fmt: skip


def test_a_run_adds_up_its_sources():
    run = OnlineStoreRun(
        (SourceRun("gold.user_segments", "changes", 3, 5, 10, 2), SourceRun("silver.profiles", "current", 1, 1, 0, 0)),
        1.5,
    )
    assert (run.written, run.skipped) == (10, 2)
