"""The HTTP service through a real uvicorn server on loopback and a real HTTP client:
every route succeeds on good input, answers 422 naming the field and value on bad input
(storing nothing), and refuses writes without the token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ragrec import Recommender
from ragrec.serve import RecommendResponse, create_app

from ._support import running

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAMP = "2025-03-01T12:00:00+00:00"


@dataclass
class Service:
    url: str
    client: httpx.Client
    rec: Recommender


@pytest.fixture(scope="module")
def service(copy_store: Callable[[], Any]) -> Iterator[Service]:
    rec = Recommender.load(copy_store())
    with running(create_app(rec, token=TOKEN)) as url, httpx.Client(base_url=url) as client:
        yield Service(url, client, rec)
    rec.close()


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": 1,
        "item_id": 3,
        "kind": "like",
        "timestamp": STAMP,
        **fields,
    }


def _detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def _names(response: httpx.Response, loc: list[Any], value: Any) -> str:
    """The 422 body has an entry at ``loc`` that shows the value received."""
    entries = [e for e in _detail(response) if e["loc"] == loc]
    assert entries, response.json()
    assert entries[0]["input"] == value, entries[0]
    return str(entries[0]["msg"])


# /recommend -------------------------------------------------------------------------------


def test_recommend(service: Service) -> None:
    response = service.client.post("/recommend", json={"user_id": 1, "k": 5})
    assert response.status_code == 200, response.text
    body = RecommendResponse.model_validate(response.json())
    assert body.user_id == 1
    assert [i.rank for i in body.items] == [1, 2, 3, 4, 5]
    assert len({i.item_id for i in body.items}) == 5
    assert all(i.channels for i in body.items)
    assert not body.cold_start
    assert not body.degraded
    seen = set(service.rec.interactions.to_frame().query("user_id == 1")["item_id"])
    assert not seen & {i.item_id for i in body.items}
    # the served recommendation is logged, so feedback can credit its channels
    assert service.rec.store.recommendation(body.rec_id) is not None


def test_recommend_with_query_and_filters_and_a_new_user(service: Service) -> None:
    response = service.client.post(
        "/recommend",
        json={
            "user_id": "someone-new",
            "k": 4,
            "query": "horror",
            "filters": {"genres_any": ["Horror"], "exclude_ids": [4]},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cold_start"] is True
    assert body["user_id"] == "someone-new"
    titles = [i["title"] for i in body["items"]]
    assert titles
    assert all(t.startswith("Horror") for t in titles)
    assert 4 not in [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize(
    ("payload", "loc", "value"),
    [
        ({"user_id": 1, "k": 0}, ["body", "k"], 0),
        ({"user_id": 1, "k": 1000}, ["body", "k"], 1000),
        ({"user_id": 1, "k": "5"}, ["body", "k"], "5"),
        ({"user_id": 1.5}, ["body", "user_id"], 1.5),
        ({"user_id": True}, ["body", "user_id"], True),
        ({"k": 3}, ["body", "user_id"], {"k": 3}),
        ({"user_id": 1, "colour": "red"}, ["body", "colour"], "red"),
        ({"user_id": 1, "explain": "yes"}, ["body", "explain"], "yes"),
        ({"user_id": 1, "query": ""}, ["body", "query"], ""),
        (
            {"user_id": 1, "filters": {"genre": ["Horror"]}},
            ["body", "filters", "genre"],
            ["Horror"],
        ),
    ],
)
def test_recommend_bad_input(
    service: Service, payload: dict[str, Any], loc: list[Any], value: Any
) -> None:
    before = len(service.rec.store.recommendations())
    _names(service.client.post("/recommend", json=payload), loc, value)
    assert len(service.rec.store.recommendations()) == before


def test_recommend_body_must_be_json(service: Service) -> None:
    response = service.client.post(
        "/recommend", content=b"user_id=1", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


# /feedback --------------------------------------------------------------------------------


def test_feedback_one_event_is_stored_once(service: Service) -> None:
    served = service.client.post("/recommend", json={"user_id": 2, "k": 3}).json()
    event = _event(
        "one-1", user_id=2, item_id=served["items"][0]["item_id"], rec_id=served["rec_id"]
    )
    first = service.client.post("/feedback", json=event, headers=AUTH)
    again = service.client.post("/feedback", json=event, headers=AUTH)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == {"event_id": "one-1", "stored": True}
    assert again.json() == {"event_id": "one-1", "stored": False}
    stored = service.rec.store.event("one-1")
    assert stored is not None
    assert (stored.user_id, stored.item_id, stored.rec_id) == (
        2,
        event["item_id"],
        served["rec_id"],
    )
    # the like entered the user's history at once
    assert service.rec.history(2)[-1][0] == event["item_id"]


def test_feedback_batch_is_stored_in_one_go(service: Service) -> None:
    events = [
        _event("batch-1", user_id=3, item_id=5),
        _event("batch-2", user_id="u-x", item_id=6, kind="rating", value=4.5),
        _event("batch-1", user_id=3, item_id=5),
    ]
    response = service.client.post("/feedback", json={"events": events}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "events": [
            {"event_id": "batch-1", "stored": True},
            {"event_id": "batch-2", "stored": True},
            {"event_id": "batch-1", "stored": False},
        ],
        "stored": 2,
    }
    assert service.rec.store.event("batch-2").value == 4.5  # type: ignore[union-attr]


def test_feedback_without_a_timestamp_is_still_idempotent(service: Service) -> None:
    event = _event("no-time", item_id=7)
    del event["timestamp"]
    first = service.client.post("/feedback", json=event, headers=AUTH)
    again = service.client.post("/feedback", json=event, headers=AUTH)
    assert [first.json()["stored"], again.json()["stored"]] == [True, False]
    # another event under a stored id is a conflict, and changes nothing
    changed = service.client.post("/feedback", json={**event, "item_id": 8}, headers=AUTH)
    assert changed.status_code == 409, changed.text
    assert changed.json()["fields"] == ["item_id"]
    assert service.rec.store.event("no-time").item_id == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "loc", "value"),
    [
        ({"kind": "loved"}, ["body", "kind"], "loved"),
        ({"kind": "rating"}, ["body", "value"], None),
        ({"kind": "rating", "value": 9.0}, ["body", "value"], 9.0),
        ({"item_id": 987654}, ["body", "item_id"], 987654),
        ({"user_id": None}, ["body", "user_id"], None),
        ({"event_id": " padded"}, ["body", "event_id"], " padded"),
        ({"timestamp": "2025-03-01T12:00:00"}, ["body", "timestamp"], "2025-03-01T12:00:00"),
        ({"colour": "red"}, ["body", "colour"], "red"),
        ({"context": [1, 2]}, ["body", "context"], [1, 2]),
    ],
)
def test_feedback_bad_input_names_the_field_and_stores_nothing(
    service: Service, change: dict[str, Any], loc: list[Any], value: Any
) -> None:
    before = service.rec.store.count()
    response = service.client.post("/feedback", json={**_event("bad-1"), **change}, headers=AUTH)
    _names(response, loc, value)
    assert service.rec.store.count() == before


def test_a_bad_event_in_a_batch_stores_none_of_it(service: Service) -> None:
    before = service.rec.store.count()
    events = [_event("b-ok", item_id=9), _event("b-bad", kind="loved"), _event("b-gone", item_id=0)]
    response = service.client.post("/feedback", json={"events": events}, headers=AUTH)
    _names(response, ["body", "events", 1, "kind"], "loved")
    # unknown items are found before anything is written, also across the batch
    events[1]["kind"] = "like"
    response = service.client.post("/feedback", json={"events": events}, headers=AUTH)
    _names(response, ["body", "events", 2, "item_id"], 0)
    assert service.rec.store.count() == before
    assert service.rec.store.event("b-ok") is None
    empty = service.client.post("/feedback", json={"events": []}, headers=AUTH)
    _names(empty, ["body", "events"], [])


# /users/{id} ------------------------------------------------------------------------------


def test_forget_a_user(service: Service) -> None:
    service.client.post("/recommend", json={"user_id": 11, "k": 3})
    service.client.post("/feedback", json=_event("forget-1", user_id=11), headers=AUTH)
    response = service.client.delete("/users/11", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == 11
    assert body["removed"]["events"] == 1
    assert body["removed"]["interactions"] > 0
    assert service.rec.store.events(11) == []
    assert not service.rec.known_user(11)
    # text ids stay text
    service.client.post("/feedback", json=_event("forget-2", user_id="shopper-7"), headers=AUTH)
    gone = service.client.delete("/users/shopper-7", headers=AUTH)
    assert gone.json()["user_id"] == "shopper-7"
    assert gone.json()["removed"]["events"] == 1


@pytest.mark.parametrize(
    ("path", "value"), [("/users/%20x", " x"), ("/users/" + "x" * 300, "x" * 300)]
)
def test_forget_bad_input(service: Service, path: str, value: str) -> None:
    before = service.rec.store.count()
    _names(service.client.delete(path, headers=AUTH), ["path", "user_id"], value)
    assert service.rec.store.count() == before


# auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_writes_without_the_token_are_refused(service: Service, headers: dict[str, str]) -> None:
    service.client.post("/feedback", json=_event("kept-u5", user_id=5), headers=AUTH)
    before = service.rec.store.count()
    refused = [
        service.client.post("/feedback", json=_event("sneaky"), headers=headers),
        service.client.post("/feedback", json={"events": [_event("sneaky")]}, headers=headers),
        service.client.delete("/users/5", headers=headers),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in refused)
    assert service.rec.store.count() == before
    assert service.rec.store.event("kept-u5") is not None
    # reads need no token
    assert service.client.post("/recommend", json={"user_id": 5}).status_code == 200


def test_no_token_means_open_writes(copy_store: Callable[[], Any]) -> None:
    rec = Recommender.load(copy_store())
    with running(create_app(rec)) as url:
        response = httpx.post(f"{url}/feedback", json=_event("open-1"))
    assert response.status_code == 200, response.text
    assert rec.store.event("open-1") is not None
    rec.close()


# /health, /metrics, /docs -----------------------------------------------------------------


def test_health(service: Service) -> None:
    response = service.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["items"] == len(service.rec.catalog)
    assert body["feedback_store"].endswith("feedback.sqlite")


def test_health_and_metrics_take_no_body(service: Service) -> None:
    for path in ("/health", "/metrics"):
        assert service.client.post(path, json={"x": 1}).status_code == 405


def test_metrics(service: Service) -> None:
    service.client.post("/recommend", json={"user_id": 1, "k": 2})
    service.client.post("/recommend", json={"user_id": 1, "k": 0})
    response = service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'ragrec_http_requests_total{method="POST",route="/recommend",status="200"}' in text
    assert 'ragrec_http_requests_total{method="POST",route="/recommend",status="422"}' in text
    assert (
        'ragrec_http_request_duration_seconds_bucket{method="POST",route="/recommend",le="+Inf"}'
        in text
    )
    assert "ragrec_recommendations_degraded_total 0" in text
    assert 'ragrec_feedback_events_total{result="stored"}' in text
    served = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("ragrec_recommendations_total ")
    ]
    assert served
    assert served[0] >= 1


def test_openapi_docs(service: Service) -> None:
    assert service.client.get("/docs").status_code == 200
    spec = service.client.get("/openapi.json").json()
    assert {"/recommend", "/feedback", "/users/{user_id}", "/health", "/metrics"} <= set(
        spec["paths"]
    )
    assert "RecommendRequest" in spec["components"]["schemas"]


@pytest.mark.slow
def test_recommend_with_explanations_from_the_bundled_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from ._support import build_tiny_store

    config = {
        "llm_candidates": 5,
        "explain_top": 1,
        "exemplars": {"k": 0},
        "rerank": {"blend_weight": 0.5},
        "generator": {"device": "cpu", "threads": 2},
    }
    rec = Recommender.load(build_tiny_store(tmp_path_factory.mktemp("llm") / "s", config))
    with running(create_app(rec)) as url:
        response = httpx.post(
            f"{url}/recommend", json={"user_id": 1, "k": 3, "explain": True}, timeout=600
        )
    rec.close()
    assert response.status_code == 200, response.text
    body = RecommendResponse.model_validate(response.json())
    assert not body.degraded, body.reason
    assert body.prompt_hash is not None
    top = body.items[0]
    assert top.label is not None
    assert body.llm_ranked
    assert body.llm_note is None
    for item in body.items:  # every item is explained; only the top one by the LLM
        assert item.explanation is not None
        assert item.explanation.text
        assert item.explanation.channels
    assert top.explanation is not None
    assert (top.explanation.source == "llm") == (top.explanation.rejected is None)
    assert all(i.explanation.source == "template" for i in body.items[1:] if i.explanation)
