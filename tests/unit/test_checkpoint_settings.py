"""A checkpoint remembers the settings that give it its meaning, and refuses to resume after one changed."""

from __future__ import annotations

import json

import pytest

from spark_jobs.streaming import CHECKPOINT_MARKER, CheckpointSettingsChanged, pin_checkpoint_settings

pytestmark = pytest.mark.unit


def test_a_new_checkpoint_records_its_settings_and_resumes_with_the_same(tmp_path):
    pin_checkpoint_settings(tmp_path / "silver", {"session_timeout": "5 minutes", "allowed_lateness": "30 minutes"})
    pin_checkpoint_settings(tmp_path / "silver", {"session_timeout": "5 minutes", "allowed_lateness": "30 minutes"})
    recorded = json.loads((tmp_path / "silver" / CHECKPOINT_MARKER).read_text())["settings"]
    assert recorded == {"session_timeout": "5 minutes", "allowed_lateness": "30 minutes"}


def test_a_changed_setting_is_refused_naming_the_variable_both_values_and_the_way_out(tmp_path):
    pin_checkpoint_settings(tmp_path / "silver", {"session_timeout": "5 minutes", "allowed_lateness": "30 minutes"})
    with pytest.raises(CheckpointSettingsChanged) as refused:
        pin_checkpoint_settings(
            tmp_path / "silver", {"session_timeout": "10 minutes", "allowed_lateness": "30 minutes"}
        )
    message = str(refused.value)
    assert "INTENTLAKE_SESSION_TIMEOUT was '5 minutes'" in message and "now '10 minutes'" in message
    assert "INTENTLAKE_SESSION_TIMEOUT='5 minutes' again" in message and "move" in message
    assert "ALLOWED_LATENESS" not in message
    # nothing was overwritten by the refused run
    recorded = json.loads((tmp_path / "silver" / CHECKPOINT_MARKER).read_text())["settings"]
    assert recorded["session_timeout"] == "5 minutes"


def test_other_keys_of_the_marker_are_kept_and_a_new_pinned_setting_is_adopted(tmp_path):
    checkpoint = tmp_path / "bronze"
    checkpoint.mkdir()
    (checkpoint / CHECKPOINT_MARKER).write_text(json.dumps({"dedup_keys": ["event_id"]}))
    pin_checkpoint_settings(checkpoint, {"landing": "/data/landing", "dedup_window": "24 hours"})
    data = json.loads((checkpoint / CHECKPOINT_MARKER).read_text())
    assert data == {"dedup_keys": ["event_id"], "settings": {"landing": "/data/landing", "dedup_window": "24 hours"}}
    with pytest.raises(CheckpointSettingsChanged, match="INTENTLAKE_LANDING was '/data/landing'"):
        pin_checkpoint_settings(checkpoint, {"landing": "/elsewhere", "dedup_window": "24 hours"})
