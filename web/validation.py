"""Request validation: JSON bodies and query strings through pydantic models.

Every problem becomes a 400 naming the field, before anything changes. A body is read only when it
is declared JSON (`Content-Type: application/json`, parameters allowed, or `application/*+json`);
any other non-empty body is a 415. A browser sends text/plain, form and untyped bodies to any
origin without a CORS preflight, so accepting them would let any web page start batches or import
rows; a JSON content type forces the preflight, which CORS refuses for origins it does not list.

JSON nested more than `MAX_JSON_DEPTH` levels deep is a 400 found by a scan before parsing: the
parser (and whatever walks the result) recurses once per level, and 100,000 `[` would exhaust it.
"""
from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from flask import request
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError,
                      field_validator)
from pydantic_core import PydanticCustomError

from config.providers import STRATEGY_NAMES
from dataset.importing import split_lines
from generation.requests import MAX_MODELS
from storage import records
from web.errors import ApiError

M = TypeVar("M", bound=BaseModel)

MAX_TEXT = records.MAX_TEXT
MAX_INSTRUCTION = 2_000
MAX_JSON_DEPTH = 64   # our bodies nest 2 levels; imported records' extra columns may nest a little more

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')   # escapes skipped; an unterminated one runs to the end
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")      # +1 / -1 as signed bytes


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `text` nests arrays/objects more than `limit` levels deep, found without parsing it.

    Brackets inside strings do not count, nor does anything after a bracket that closes more than was
    opened (the parser stops there). Two C-speed counts settle any text with few brackets (every real
    body); otherwise the depth is summed over the brackets alone, linear in the text and not recursive."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    steps = array("b", brackets.encode("ascii").translate(_STEP))
    if max(accumulate(steps)) <= limit:
        return False
    for depth in accumulate(steps):   # the deepest point may lie after the text went wrong: look in order
        if depth > limit:
            return True
        if depth < 0:
            return False
    return False


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    what: ClassVar[str] = "request"   # how error messages name the body


ModelEntry = Annotated[StrictStr, Field(min_length=1, max_length=300)]
MODELS_FIELD = Field(default=None, min_length=1, max_length=MAX_MODELS, description=(
    'Exactly these models, tried in this order (nothing else is appended), as "provider/model" from '
    "GET /api/models; not together with provider/model"))
STRATEGY_FIELD = Field(default=None, description=(
    "How the candidates are ordered: order (configured or given order), cheapest (configured prices), "
    "fastest (observed latency), spread (across providers by remaining budget); default: engine.strategy"))


class Routing(Body):
    """The `models` and `strategy` fields shared by single generation and batches."""

    models: list[ModelEntry] | None = MODELS_FIELD
    strategy: Literal["order", "cheapest", "fastest", "spread"] | None = STRATEGY_FIELD

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None   # blank: the default, as for provider and model
        if isinstance(value, str) and value.strip() not in STRATEGY_NAMES:
            raise PydanticCustomError("unknown_strategy", "unknown strategy {value}; use one of {names}",
                                      {"value": repr(value[:100]), "names": ", ".join(STRATEGY_NAMES)})
        return value.strip() if isinstance(value, str) else value


class GenerateBody(Routing):
    practice_area: StrictStr | None = Field(default=None, max_length=200)
    topic: StrictStr = Field(min_length=1, max_length=300)
    difficulty: StrictStr | None = Field(default=None, max_length=50)
    provider: StrictStr | None = Field(default=None, max_length=100)
    model: StrictStr | None = Field(default=None, max_length=200)
    sample_type: StrictStr | None = Field(default=None, max_length=50)
    reasoning_instruction: StrictStr | None = Field(default=None, max_length=MAX_INSTRUCTION)
    save: StrictBool = True


class BatchStartBody(Routing):
    target_count: StrictInt = Field(ge=1, le=1_000_000)
    provider: StrictStr | None = Field(default=None, max_length=100)
    model: StrictStr | None = Field(default=None, max_length=200)
    topic: StrictStr | None = Field(default=None, max_length=300)
    difficulty: StrictStr | None = Field(default=None, max_length=50)
    reasoning_instruction: StrictStr | None = Field(default=None, max_length=MAX_INSTRUCTION)
    sample_type: StrictStr | None = Field(default=None, max_length=50)


class BatchStopBody(Body):
    batch_id: StrictStr | None = Field(default=None, max_length=200)


class ImportBody(Body):
    model_config = ConfigDict(str_strip_whitespace=False)  # line numbers in errors count from the first line
    # No length constraint here: pydantic refuses text holding a lone surrogate as soon as it has
    # one, and such text must reach the line check, which names the line and the field.
    content: StrictStr = Field(description="one JSON object per line", json_schema_extra={"minLength": 1})

    @field_validator("content")
    @classmethod
    def _lines_not_too_deep(cls, content: str) -> str:
        """A line nested too deeply would exhaust the parser; lines count from 1, like the import's."""
        if not content:
            raise PydanticCustomError("string_too_short", "String should have at least 1 character")
        for number, line in enumerate(split_lines(content), 1):
            if too_deep(line):
                raise PydanticCustomError("json_too_deep", "line {line}: JSON nested more than {limit} levels deep",
                                          {"line": number, "limit": MAX_JSON_DEPTH})
        return content


class SampleFields(Body):
    """The editable fields of a sample; PUT merges whichever are given. Types and limits are the
    stored record's (`storage.records`)."""

    id: records.SampleId | None = None
    question: records.Question | None = None
    answer: records.Answer | None = None
    reasoning: records.Reasoning | None = None
    case_citation: records.Citation | None = None
    topic: records.Topic | None = None
    difficulty: records.Difficulty | None = None
    sample_type: records.SampleType | None = None


class NewSample(Body):
    """A whole sample (`POST /api/add`); types and limits are the stored record's (`storage.records`)."""

    what: ClassVar[str] = "sample"
    id: records.SampleId | None = None
    question: records.Question
    answer: records.Answer
    reasoning: records.Reasoning
    case_citation: records.Citation
    topic: records.Topic
    difficulty: records.Difficulty
    sample_type: records.SampleType | None = None
    provider: records.Provider | None = None
    model: records.Model | None = None
    batch_id: records.BatchId | None = None


class DownloadBody(Body):
    sample_ids: list[StrictStr] = Field(min_length=1, max_length=100_000)


class HuggingFacePushBody(Body):
    token: StrictStr | None = Field(default=None, max_length=500, pattern=r"^[!-~]+$")   # printable ASCII, as HTTP headers need
    repo_name: StrictStr | None = Field(default=None, max_length=200)
    format: StrictStr | None = Field(default=None, max_length=20)
    private: StrictBool = False


def describe(error: ValidationError, prefix: str = "") -> str:
    """Every problem as "<prefix><field>: <what is wrong>", joined by "; "."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        message = records.UNICODE_MESSAGE if item["type"] == "string_unicode" else item["msg"]
        parts.append(f"{prefix}{where}: {message}")
    return "; ".join(parts)


JSON_MEDIA_TYPE = "application/json"


def json_object(required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; 400 for an empty, non-JSON or non-object body, 415 for a
    body not declared as JSON. An empty body is `{}` when the body is optional, whatever its type."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise ApiError(400, "request body is empty; send a JSON object")
        return {}
    if not request.is_json:   # application/json (any parameters) or application/*+json
        declared = request.mimetype or "no Content-Type"
        raise ApiError(415, f"request body must be sent as Content-Type: {JSON_MEDIA_TYPE}, not {declared}")
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")   # as json.loads reads bytes
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid JSON (bad text encoding)") from None
    if too_deep(text):
        raise ApiError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is None:
        raise ApiError(400, "request body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, not a JSON {type(data).__name__}")
    return data


def parse_body(model: type[M], required: bool = True) -> M:
    """The JSON body through a body model; 400 "invalid <what>: <field>: <problem>"."""
    try:
        return model.model_validate(json_object(required))
    except ValidationError as exc:
        what = getattr(model, "what", "request")
        raise ApiError(400, f"invalid {what}: {describe(exc)}") from None


def parse_query(model: type[M]) -> M:
    """`request.args` through a query model; blank values count as absent, the first of repeats wins."""
    raw = {name: value.strip() for name, value in request.args.items() if value.strip()}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, describe(exc, "invalid query parameter ")) from None
