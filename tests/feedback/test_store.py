"""The store beside events: served recommendations, channel weights, profiles, forgetting
a user, schema versions and locations; on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ragrec.errors import ConfigError
from ragrec.feedback import (
    DEFAULT_DB_NAME,
    SCHEMA_VERSION,
    TABLES,
    FeedbackConflictError,
    FeedbackEvent,
    FeedbackStore,
    FeedbackStoreError,
    InvalidFeedbackError,
    ItemProvenance,
    PostgresFeedbackStore,
    RecommendationRecord,
    ServedItem,
    SQLiteFeedbackStore,
    StoreVersionError,
    open_store,
)

from ._support import all_tables, run_sql

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(rec_id: str = "r1", user_id: int | str = "alice", **overrides: Any) -> dict[str, Any]:
    """The fields of a served recommendation of two items, with overrides."""
    fields: dict[str, Any] = {
        "rec_id": rec_id,
        "user_id": user_id,
        "items": [
            ServedItem(
                item_id=318,
                score=0.9,
                provenance=(
                    ItemProvenance(channel="semantic", rank=1, score=0.71),
                    ItemProvenance(channel="popularity", rank=4, score=0.2),
                ),
            ),
            {"item_id": "tt0111161", "provenance": [{"channel": "ease", "rank": 2, "score": 3}]},
        ],
        "weights": {"semantic": 1.0, "popularity": 0.25, "ease": 0.5},
        "prompt_hash": "sha256:ab12",
        "model": "transformers:SmolLM2-135M-Instruct",
        "timestamp": T0,
        "context": {"query": None, "labels": ["A", "B"]},
    }
    fields.update(overrides)
    return fields


def like(event_id: str, user_id: int | str, item_id: int | str, **more: Any) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id, user_id=user_id, item_id=item_id, kind="like", timestamp=T0, **more
    )


# -- recommendations --------------------------------------------------------------------


def test_recommendation_is_logged_and_credits_channels(store: FeedbackStore) -> None:
    served = RecommendationRecord(**record())
    assert store.log_recommendation(served) is True
    assert store.log_recommendation(record()) is False  # identical: a no-op
    assert store.recommendation("r1") == served
    assert store.recommendation("r2") is None
    # the keyword form
    assert store.log_recommendation(**record("r2", user_id=7, timestamp=T0 + timedelta(1)))
    assert [r.rec_id for r in store.recommendations()] == ["r1", "r2"]
    assert [r.rec_id for r in store.recommendations(7)] == ["r2"]
    assert store.recommendations(since=T0 + timedelta(hours=1))[0].user_id == 7
    # a later event names the recommendation; its item is credited to the proposers
    store.add(like("e1", "alice", 318, rec_id="r1"))
    answered = store.events()[0]
    assert answered.rec_id is not None
    rec = store.recommendation(answered.rec_id)
    assert rec is not None
    assert rec.channels_for(answered.item_id) == ("semantic", "popularity")
    assert rec.channels_for("tt0111161") == ("ease",)
    assert rec.channels_for("318") == ()  # "318" is another id than 318
    assert rec.weights == {"semantic": 1.0, "popularity": 0.25, "ease": 0.5}


def test_conflicting_recommendation_is_rejected(store: FeedbackStore) -> None:
    store.log_recommendation(record())
    with pytest.raises(FeedbackConflictError) as info:
        store.log_recommendation(record(model="vllm:other"))
    assert "recommendation 'r1'" in str(info.value)
    assert "'model' stored 'transformers:SmolLM2-135M-Instruct', received 'vllm:other'" in str(
        info.value
    )
    assert store.recommendation("r1") == RecommendationRecord(**record())


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"items": [{"item_id": 1}, {"item_id": 1}]}, "items", "served twice"),
        (
            {"items": [{"item_id": 1, "provenance": [{"channel": "s", "rank": 0, "score": 1}]}]},
            "items.0.provenance.0.rank",
            "greater than or equal to 1",
        ),
        ({"weights": {"semantic": -1}}, "weights", "finite and >= 0"),
        ({"timestamp": datetime(2024, 1, 1)}, "timestamp", "no time zone"),
        ({"rec_id": ""}, "rec_id", "empty"),
    ],
)
def test_malformed_recommendation_is_explained(
    store: FeedbackStore, overrides: dict[str, Any], field: str, expected: str
) -> None:
    with pytest.raises(InvalidFeedbackError) as info:
        store.log_recommendation(record(**overrides))
    assert [i.field for i in info.value.issues] == [field]
    assert expected in str(info.value)
    assert "fix:" in str(info.value)
    assert store.recommendations() == []


def test_log_recommendation_takes_one_form(store: FeedbackStore) -> None:
    with pytest.raises(ConfigError, match="not both"):
        store.log_recommendation(record(), rec_id="r9")
    with pytest.raises(ConfigError, match="not neither"):
        store.log_recommendation()


# -- weights and profiles -----------------------------------------------------------------


def test_weights_per_user_and_global(store: FeedbackStore) -> None:
    assert store.get_weights(None) == {}
    assert store.get_weights("alice") == {}
    store.set_weights(None, {"semantic": 1.0, "popularity": 0.1})
    store.set_weights("alice", {"semantic": 2, "ease": 0.0})
    store.set_weights(1, {"ease": 0.3})
    assert store.get_weights(None) == {"popularity": 0.1, "semantic": 1.0}
    assert store.get_weights("alice") == {"ease": 0.0, "semantic": 2.0}
    assert store.get_weights(1) == {"ease": 0.3}
    assert store.get_weights("1") == {}
    # set replaces the whole set
    store.set_weights("alice", {"popularity": 0.5})
    assert store.get_weights("alice") == {"popularity": 0.5}
    with pytest.raises(InvalidFeedbackError) as info:
        store.set_weights("alice", {"semantic": math.nan})
    assert "user 'alice'" in str(info.value)
    assert "finite and >= 0" in str(info.value)
    with pytest.raises(InvalidFeedbackError, match="not a non-empty str"):
        store.set_weights(None, {"": 1.0})
    assert store.get_weights("alice") == {"popularity": 0.5}
    assert store.get_weights(None) == {"popularity": 0.1, "semantic": 1.0}
    store.set_weights(None, {})
    assert store.get_weights(None) == {}


def test_profile_values(store: FeedbackStore) -> None:
    assert store.profile("alice") == {}
    store.update_profile("alice", {"added": [318, 1], "blocked": [], "note": "likes noir"})
    store.update_profile("alice", {"note": None, "count": 2})
    assert store.profile("alice") == {"added": [318, 1], "blocked": [], "count": 2}
    with pytest.raises(InvalidFeedbackError, match="'bad'") as info:
        store.update_profile("alice", {"count": 3, "bad": math.nan})
    assert "no NaN" in str(info.value)
    assert store.profile("alice")["count"] == 2


# -- forgetting a user --------------------------------------------------------------------

VICTIM = "victim-7f3a"


def _populate(store: FeedbackStore, user: str, n: int) -> None:
    store.add_many(like(f"{user}-e{i}", user, i, rec_id=f"{user}-r0") for i in range(n))
    store.log_recommendation(record(f"{user}-r0", user_id=user))
    store.log_recommendation(record(f"{user}-r1", user_id=user))
    store.set_weights(user, {"semantic": 0.5})
    store.update_profile(user, {"added": [1, 2], "seen": 3})


def _dump(location: str) -> dict[str, set[tuple[Any, ...]]]:
    return {t: set(run_sql(location, f"SELECT * FROM {t}")) for t in all_tables(location)}


def test_forget_user_removes_everything_about_them_only(
    store: FeedbackStore, location: str
) -> None:
    _populate(store, VICTIM, 5)
    _populate(store, "bystander", 3)
    store.set_weights(None, {"semantic": 1.0})
    before = _dump(location)
    assert set(TABLES) <= set(before)
    assert any(VICTIM in repr(row) for rows in before.values() for row in rows)

    counts = store.forget_user(VICTIM)

    assert counts == {"events": 5, "recommendations": 2, "user_weights": 1, "profiles": 2}
    after = _dump(location)
    mentions = [
        (table, row) for table, rows in after.items() for row in rows if VICTIM in repr(row)
    ]
    assert mentions == []
    # everything else is as it was
    for table, rows in before.items():
        assert after[table] == {row for row in rows if VICTIM not in repr(row)}, table
    assert store.events(user_id=VICTIM) == []
    assert VICTIM not in store.users()
    assert len(store.events(user_id="bystander")) == 3
    assert store.get_weights(None) == {"semantic": 1.0}
    assert store.forget_user(VICTIM) == dict.fromkeys(counts, 0)


# -- schema versions ----------------------------------------------------------------------


def test_schema_version_is_recorded_and_checked(location: str) -> None:
    with open_store(location) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.add(like("e1", "alice", 1))
    assert run_sql(location, "SELECT version FROM ragrec_schema") == [(SCHEMA_VERSION,)]

    run_sql(location, "UPDATE ragrec_schema SET version = ?", (SCHEMA_VERSION + 98,))
    with pytest.raises(StoreVersionError) as newer:
        open_store(location)
    message = str(newer.value)
    assert f"schema version {SCHEMA_VERSION + 98}" in message
    assert f"reads schema version {SCHEMA_VERSION}" in message
    assert "upgrade ragrec" in message

    run_sql(location, "UPDATE ragrec_schema SET version = 0")
    with pytest.raises(StoreVersionError, match="schema version 0, which this ragrec cannot"):
        open_store(location)

    # refusing to open changed nothing: restored, the store reads as before
    run_sql(location, "UPDATE ragrec_schema SET version = ?", (SCHEMA_VERSION,))
    with open_store(location) as store:
        assert [e.event_id for e in store.events()] == ["e1"]


def test_reopened_store_keeps_everything(location: str) -> None:
    with open_store(location) as store:
        store.add(like("e1", "alice", 1))
        store.log_recommendation(record())
        store.set_weights("alice", {"ease": 1.0})
        store.update_profile("alice", {"seen": 1})
    with open_store(location) as store:
        assert store.count() == 1
        assert store.recommendation("r1") == RecommendationRecord(**record())
        assert store.get_weights("alice") == {"ease": 1.0}
        assert store.profile("alice") == {"seen": 1}


def test_closed_store_refuses_work(store: FeedbackStore) -> None:
    store.close()
    with pytest.raises(FeedbackStoreError, match="is closed"):
        store.count()
    store.close()


# -- locations and backends -----------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    with open_store(tmp_path / "store") as store:
        assert isinstance(store, SQLiteFeedbackStore)
        assert store.location == str(tmp_path / "store" / DEFAULT_DB_NAME)
    existing = tmp_path / "existing"
    existing.mkdir()
    with open_store(str(existing)) as store:
        assert store.location == str(existing / DEFAULT_DB_NAME)
    with open_store(tmp_path / "db" / "events.sqlite3") as store:
        assert store.location == str(tmp_path / "db" / "events.sqlite3")
    for bad in ("mysql://u@h/db", ":memory:", ""):
        with pytest.raises(ConfigError, match="feedback store location"):
            open_store(bad)


def test_sqlite_store_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "f.sqlite") as store:
        store.add(like("e1", "alice", 1))
        conn = sqlite3.connect(store.path)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()
        assert store._connection().execute("PRAGMA synchronous").fetchone() == (2,)
    with SQLiteFeedbackStore(tmp_path / "f.sqlite", synchronous="normal") as store:
        assert store._connection().execute("PRAGMA synchronous").fetchone() == (1,)
    with pytest.raises(ConfigError, match="synchronous='off'"):
        SQLiteFeedbackStore(tmp_path / "f.sqlite", synchronous="off")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="is a directory"):
        SQLiteFeedbackStore(tmp_path)


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("not a database, just some notes " * 100)
    with pytest.raises(FeedbackStoreError, match="not a SQLite database"):
        open_store(bogus)
    assert bogus.read_text().startswith("not a database")


def test_sqlite_copy_to(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "a" / DEFAULT_DB_NAME) as store:
        store.add(like("e1", "alice", 1))
        with store.copy_to(tmp_path / "b" / DEFAULT_DB_NAME) as copy:
            store.add(like("e2", "alice", 2))
            assert [e.event_id for e in copy.events()] == ["e1"]
            copy.add(like("e3", "alice", 3))
        assert store.count() == 2
        with pytest.raises(ConfigError, match="does not overwrite"):
            store.copy_to(tmp_path / "b" / DEFAULT_DB_NAME)


def test_postgres_connection_error_hides_the_password(postgres_server: str) -> None:
    with pytest.raises(FeedbackStoreError) as info:
        PostgresFeedbackStore(
            "postgresql://ragrec:s3cret@127.0.0.1:1/feedback", connect_timeout_s=2
        )
    message = str(info.value)
    assert "s3cret" not in message
    assert "postgresql://ragrec:***@127.0.0.1:1/feedback" in message
    assert "cannot connect" in message
    assert "server is running" in message


def test_postgres_tables_can_live_in_their_own_schema(postgres_url: str) -> None:
    run_sql(postgres_url, "CREATE SCHEMA feedback_a")
    with open_store(f"{postgres_url}?options=-csearch_path%3Dfeedback_a") as store:
        store.add(like("e1", "alice", 1))
    found = run_sql(
        postgres_url,
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'ragrec_events'",
    )
    assert found == [("feedback_a",)]
