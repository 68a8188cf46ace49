"""`@operation(...)`: one declaration per route that both validates the request and describes it.

    @bp.get("/api/data")
    @operation("Samples as a bare array", query=DataQuery, response=arr("Sample"), headers=TOTAL)
    def data(query: DataQuery): ...

The view receives the validated `query` and `body` models as keyword arguments; a bad value is a
400 in the project's error format before the view runs. `web.openapi` reads the same declaration
(`view.operation`) to build `GET /api/openapi.json`. `@operation` goes below the route decorator.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from pydantic import BaseModel

from web.validation import parse_body, parse_query

F = TypeVar("F", bound=Callable[..., Any])
Schema = dict[str, Any] | str   # a JSON schema, or the name of a schema in `web.schemas.COMPONENTS`


@dataclass(frozen=True)
class Operation:
    """What a route accepts and answers."""

    summary: str
    response: Schema
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    media: tuple[str, ...] = ("application/json",)
    errors: tuple[int, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)   # response header -> description
    public: bool = False                                       # a write that needs no token
    description: str = ""
    accepted: Schema | None = None                             # a 202 answer (work started in the background)
    accepted_headers: Mapping[str, str] = field(default_factory=dict)


def operation(summary: str, *, response: Schema, query: type[BaseModel] | None = None,
              body: type[BaseModel] | None = None, body_required: bool = True,
              media: str | tuple[str, ...] = "application/json", errors: tuple[int, ...] = (),
              headers: Mapping[str, str] | None = None, public: bool = False,
              description: str = "", accepted: Schema | None = None,
              accepted_headers: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Declare a route: its query model, body model and answer (schema, media types, error statuses;
    `accepted`: the 202 answer of a route that may hand its work to the background)."""
    op = Operation(summary=summary, response=response, query=query, body=body, body_required=body_required,
                         media=(media,) if isinstance(media, str) else media, errors=errors,
                         headers=dict(headers or {}), public=public, description=description,
                         accepted=accepted, accepted_headers=dict(accepted_headers or {}))

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                kwargs["body"] = parse_body(body, required=body_required)
            return view(*args, **kwargs)

        validated.operation = op  # type: ignore[attr-defined]
        return validated  # type: ignore[return-value]

    return decorate


def declared(view: Callable[..., Any]) -> Operation | None:
    """The declaration of a view function, if it has one."""
    return getattr(view, "operation", None)
