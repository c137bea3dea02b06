"""TGI's request accounting in one place: `tgi_request_count` once a request's body parsed, then one outcome,
`tgi_request_success` or `tgi_request_failure{err}` (router.metrics maps error types to TGI's labels).

Every counted route (/generate, /, /invocations, /vertex, /chat_tokenize, the OpenAI routes) runs its work inside
`with counted(metrics) as outcome:`. A route that answers with a stream hands its outcome to the stream
(`outcome.streamed()`), and router.streaming.stream_ending decides it when the stream ends (TGI and OpenAI alike).
What no outcome saw is counted by `uncounted_errors`, the app's error handlers' callback (router.http): a client that
left before its response started (CancelOnDisconnect), and errors of routes that are not counted (/tokenize).

Not counted, as in TGI (its body extractor refuses the request before the handler counts it): bodies that are not
JSON or not the expected shape (`BodyError`), 413s, and 401s (the handlers never pass those on).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

from pydantic import ValidationError as PydanticValidationError

from router.errors import RouterError
from router.http import BodyError

_COUNTED: weakref.WeakSet = weakref.WeakSet()  # errors an Outcome already counted (the handlers must not again)


def counts(error: RouterError) -> bool:
    """The one rule: which errors count as a failed request."""
    return not isinstance(error, BodyError) and error.status != 413


class Outcome:
    """One counted request: counted when made; then the first of success / failure wins, later ones are ignored."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.ended = False
        self.in_stream = False  # decided by the stream the route returned, not by the end of its block
        metrics.request_count.inc()

    def success(self) -> None:
        if not self.ended:
            self.ended = True
            self.metrics.request_success.inc()

    def failure(self, error: RouterError) -> None:
        _COUNTED.add(error)
        if not self.ended and counts(error):
            self.ended = True
            self.metrics.observe_failure(error.error_type)

    def streamed(self) -> "Outcome":
        """Called by a route that answers with a stream: the stream's end decides the outcome."""
        self.in_stream = True
        return self


@contextlib.contextmanager
def counted(metrics) -> Iterator[Outcome]:
    """A counted route's work: a RouterError is a failure (re-raised for the route's error body), a normal exit a
    success (unless the route answered with a stream). A client model that refused values the wire model let through
    (pydantic, 422) is a validation failure. Cancellation counts nothing here (see `uncounted_errors`)."""
    outcome = Outcome(metrics)
    try:
        yield outcome
    except RouterError as e:
        outcome.failure(e)
        raise
    except PydanticValidationError:
        outcome.failure(RouterError("Input validation error", 422, "validation"))
        raise
    if not outcome.in_stream:
        outcome.success()


def uncounted_errors(metrics):
    """The app's error handlers' callback: counts an error (a drop before the response included) that no Outcome
    counted, by the same rule."""
    def count(error: RouterError) -> None:
        if error not in _COUNTED and counts(error):
            metrics.observe_failure(error.error_type)
    return count
