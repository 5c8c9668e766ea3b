"""The FastAPI application: one :class:`~ragrec.Recommender` per process.

No ``from __future__ import annotations`` here: FastAPI reads the route handlers'
annotations at run time, and they refer to names local to :func:`create_app`.
"""

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ragrec import Recommender
from ragrec._version import __version__
from ragrec.errors import ConfigError, DataValidationError, RagrecError
from ragrec.feedback import (
    FeedbackConflictError,
    FeedbackEvent,
    FeedbackStoreError,
    InvalidFeedbackError,
)
from ragrec.serve._convert import to_response
from ragrec.serve._metrics import ServiceMetrics
from ragrec.serve._models import (
    FeedbackBatch,
    FeedbackBatchResult,
    FeedbackBody,
    FeedbackIn,
    FeedbackResult,
    ForgetResponse,
    HealthResponse,
    RecommendRequest,
    RecommendResponse,
)

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

# a user id in a path: no surrounding blanks, no control characters
_PATH_ID = r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"


class _Timing:
    """ASGI middleware: counts every request by route template and status, with latency."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request(scope["method"], route, status, time.perf_counter() - start)


def _issue(loc: Sequence[Any], value: Any, message: str) -> dict[str, Any]:
    """One entry of a 422 body, in FastAPI's shape: where, what was received, why."""
    return {"type": "value_error", "loc": list(loc), "msg": message, "input": value}


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def _batch_loc(field: str, *, batch: bool) -> list[Any]:
    """``"2.item_id"`` (an issue of :meth:`Recommender.feedback_many`) as a body path."""
    index, _, name = field.partition(".")
    path: list[Any] = [int(p) if p.isdigit() else p for p in name.split(".")]
    return ["body", "events", int(index), *path] if batch else ["body", *path]


class _RejectedError(Exception):
    """A request refused with a ready response."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def create_app(
    recommender: Recommender,
    *,
    token: str | None = None,
    close_on_shutdown: bool = False,
) -> FastAPI:
    """The HTTP service over one recommender.

    Routes: ``POST /recommend``, ``POST /feedback`` (one event or ``{"events": [...]}``),
    ``DELETE /users/{user_id}``, ``GET /health``, ``GET /metrics`` (Prometheus text),
    and the OpenAPI docs at ``/docs``. Handlers run in the server's thread pool:
    recommendations are served while feedback is written (the recommender serialises
    writes itself).

    Args:
        recommender: The loaded store; the app does not copy it.
        token: When set, ``POST /feedback`` and ``DELETE /users/{user_id}`` need the header
            ``Authorization: Bearer <token>`` (401 otherwise).
        close_on_shutdown: Close the recommender when the server stops (for a
            recommender the app was given to own).

    Raises:
        ConfigError: ``token`` is empty or has surrounding blanks.
    """
    if token is not None and (not token or token != token.strip()):
        raise ConfigError("token: an empty token or one with surrounding blanks is not allowed")
    rec = recommender
    metrics = ServiceMetrics()
    started = datetime.now(UTC)
    integer_users = rec.interactions.user_ids.dtype.kind in "iu"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            rec.close()

    app = FastAPI(
        title="ragrec",
        version=__version__,
        description="Retrieval-augmented recommendation with LLM re-ranking and a durable "
        "feedback loop.",
        lifespan=lifespan,
    )
    app.add_middleware(_Timing, metrics=metrics)
    bearer = HTTPBearer(auto_error=False, description="The server's --token.")

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                "(the server's --token or RAGREC_SERVE_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            # the feedback body is one event or a batch: drop the form's tag from paths
            if len(loc) > 1 and loc[0] == "body" and loc[1] in ("event", "batch"):
                loc = [loc[0], *loc[2:]]
            errors.append({**err, "loc": loc})
        return _unprocessable(errors)

    @app.exception_handler(_RejectedError)
    async def rejected(_: Request, exc: _RejectedError) -> JSONResponse:
        return exc.response

    @app.exception_handler(FeedbackStoreError)
    async def store_unavailable(_: Request, exc: FeedbackStoreError) -> JSONResponse:
        logger.warning("feedback store error: %s", exc)
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={422: {"description": "Invalid request: names the field and value."}},
    )
    def recommend(body: RecommendRequest) -> RecommendResponse:
        """Recommend ``k`` items to a user (unknown users get cold-start items)."""
        try:
            result = rec.recommend(
                body.user_id,
                k=body.k,
                query=body.query,
                explain=body.explain,
                filters=body.filters,
            )
        except (ConfigError, DataValidationError) as exc:
            raise _RejectedError(_unprocessable([_issue(["body"], None, str(exc))])) from exc
        metrics.recommendation(degraded=result.degraded, cold_start=result.cold_start)
        return to_response(result)

    def _events(items: Sequence[FeedbackIn], *, batch: bool) -> list[FeedbackEvent]:
        """Validated events; an omitted timestamp is the stored event's (a resend) or now."""
        events: list[FeedbackEvent] = []
        errors: list[dict[str, Any]] = []
        now = datetime.now(UTC)
        for index, item in enumerate(items):
            fields = item.model_dump(exclude_none=True)
            if item.timestamp is None:
                stored = rec.store.event(item.event_id)
                fields["timestamp"] = stored.timestamp if stored is not None else now
            try:
                events.append(FeedbackEvent.parse(fields))
            except InvalidFeedbackError as exc:
                errors.extend(
                    _issue(
                        _batch_loc(f"{index}.{i.field}", batch=batch),
                        getattr(item, i.field, i.value),
                        f"{i.why} (fix: {i.fix})",
                    )
                    for i in exc.issues
                )
        if errors:
            raise _RejectedError(_unprocessable(errors))
        return events

    @app.post(
        "/feedback",
        response_model=FeedbackResult | FeedbackBatchResult,
        dependencies=[Depends(authorised)],
        responses={
            401: {"description": "Missing or wrong bearer token."},
            409: {"description": "An event id is stored with different content."},
            422: {"description": "Invalid event: names the field and value; nothing stored."},
        },
    )
    def feedback(body: FeedbackBody) -> FeedbackResult | FeedbackBatchResult:
        """Store one event, or a batch ``{"events": [...]}`` atomically; idempotent by
        ``event_id``. Acknowledged events are committed to the feedback store."""
        batch = isinstance(body, FeedbackBatch)
        items = body.events if isinstance(body, FeedbackBatch) else [body]
        for attempt in range(2):
            events = _events(items, batch=batch)
            try:
                results = rec.feedback_many(events)
                break
            except InvalidFeedbackError as exc:
                errors = [
                    _issue(_batch_loc(i.field, batch=batch), i.value, f"{i.why} (fix: {i.fix})")
                    for i in exc.issues
                ]
                raise _RejectedError(_unprocessable(errors)) from exc
            except FeedbackConflictError as exc:
                # two first sends of an event without a timestamp can race: once more
                # with the timestamp now stored
                if attempt == 0 and any(i.timestamp is None for i in items):
                    continue
                raise _RejectedError(
                    JSONResponse(
                        status_code=409,
                        content={
                            "detail": str(exc),
                            "fields": sorted(exc.differences),
                        },
                    )
                ) from exc
        out = [FeedbackResult(event_id=r.event_id, stored=r.stored) for r in results]
        stored = sum(r.stored for r in out)
        metrics.events(stored=stored, repeated=len(out) - stored)
        if batch:
            return FeedbackBatchResult(events=out, stored=stored)
        return out[0]

    @app.delete(
        "/users/{user_id}",
        response_model=ForgetResponse,
        dependencies=[Depends(authorised)],
        responses={401: {"description": "Missing or wrong bearer token."}},
    )
    def forget(
        user_id: Annotated[
            str,
            Path(
                min_length=1,
                max_length=256,
                pattern=_PATH_ID,
                description="The user; digits are an integer id when the store's user ids "
                "are integers.",
            ),
        ],
    ) -> ForgetResponse:
        """Forget a user: events, served recommendations, weights, profile, exemplars and
        training rows (see :meth:`ragrec.Recommender.forget_user`)."""
        key: int | str = user_id
        if integer_users and user_id.lstrip("-").isdigit():
            key = int(user_id)
        removed = rec.forget_user(key)
        return ForgetResponse(user_id=key, removed=removed)

    @app.get("/health", response_model=HealthResponse)
    def health() -> HealthResponse | JSONResponse:
        """Liveness and readiness: the store is loaded and its feedback database answers."""
        try:
            rec.store.event("health-check")
        except RagrecError as exc:
            return JSONResponse(
                status_code=503, content={"status": "unavailable", "detail": str(exc)}
            )
        return HealthResponse(
            status="ok",
            version=__version__,
            items=len(rec.catalog),
            users=rec.interactions.n_users,
            model=rec.config.generator.model,
            backend=rec.config.generator.backend,
            feedback_store=rec.store.location,
            started=started,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Request counts, latency histogram, recommendation and feedback counters
        (Prometheus text format, this process)."""
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app
