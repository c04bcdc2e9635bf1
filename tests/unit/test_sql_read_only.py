"""`intentlake sql` only reads unless --write is given: a statement that writes is refused before it runs."""

from __future__ import annotations

import pytest

from spark_jobs.operations import Lakehouse, ReadOnlyError, sql

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM gold.user_segments",
        "  insert into bronze.events select * from bronze.events",
        "-- a comment first\nDROP TABLE silver.sessions",
        "/* block */ UPDATE gold.send_times SET best_local_hour = 1",
        "MERGE INTO gold.user_segments t USING x s ON t.person_id = s.person_id WHEN MATCHED THEN DELETE",
        "OPTIMIZE bronze.events",
        "",
    ],
)
def test_a_statement_that_writes_is_refused_without_starting_spark(settings, statement):
    lakehouse = Lakehouse(settings)
    with pytest.raises(ReadOnlyError, match="unless --write"):
        sql(lakehouse, statement)
    assert lakehouse._spark is None  # refused before any session was built, so nothing ran
