"""A writer process for the feedback-store tests.

    python _writer.py LOCATION PREFIX COUNT [SHARED]

Stores events ``PREFIX-0`` ... ``PREFIX-(COUNT-1)`` (forever when COUNT is -1) and, once
``add``/``add_many`` has returned, prints each stored id on its own line, flushed: a
printed id is an acknowledged event. Every third step is a batch of four
(``add_many``). With SHARED > 0 it also stores the events ``shared-0`` ...
``shared-(SHARED-1)``, one after each of its first steps; every writer sends them with
identical content.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from ragrec.feedback import EventKind, FeedbackEvent, open_store

_KINDS = list(EventKind)
_START = datetime(2024, 1, 1, tzinfo=UTC)


def make_event(prefix: str, i: int) -> FeedbackEvent:
    """The event ``{prefix}-{i}``: its content depends only on its id."""
    kind = _KINDS[i % len(_KINDS)]
    return FeedbackEvent(
        event_id=f"{prefix}-{i}",
        user_id=f"user-{i % 7}",
        item_id=i % 50,
        kind=kind,
        value=float(1 + i % 5) if kind is EventKind.RATING else None,
        timestamp=_START + timedelta(seconds=i, microseconds=i),
        context={"writer": prefix, "i": i} if i % 2 else None,
    )


def main(location: str, prefix: str, count: int, shared: int) -> None:
    out = sys.stdout
    with open_store(location) as store:
        i = step = 0
        while count < 0 or i < count:
            if i % 3 == 2 and (count < 0 or i + 4 <= count):
                batch = [make_event(prefix, j) for j in range(i, i + 4)]
                store.add_many(batch)
                out.write("".join(f"{e.event_id}\n" for e in batch))
                i += 4
            else:
                store.add(make_event(prefix, i))
                out.write(f"{prefix}-{i}\n")
                i += 1
            out.flush()
            if step < shared:
                store.add(make_event("shared", step))
            step += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
