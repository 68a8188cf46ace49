"""Query-string models: what each GET (and the Hub push) accepts after `?`.

`web.operation` validates `request.args` with these models and the OpenAPI document lists their
fields as query parameters, so the two cannot disagree. Values arrive as text: pydantic's lax mode
turns "5" into 5 and "true" into True; blank values count as absent.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.catalog import DIFFICULTIES
from quality.checks import FLAGS
from quality.service import REJECT_CODES
from storage.store import FILTER_COLUMNS, SEARCH_FIELDS

Difficulty = Literal[DIFFICULTIES]  # type: ignore[valid-type]
FlagCode = Literal[tuple(FLAGS)]  # type: ignore[valid-type]
SearchField = Literal[SEARCH_FIELDS + ("all",)]  # type: ignore[valid-type]
ExportFormat = Literal["parquet", "jsonl", "csv"]
MAX_ROWS = 10_000_000
MAX_TEXT = 500


class Query(BaseModel):
    """Unknown parameters are ignored, as they always were."""

    model_config = ConfigDict(extra="ignore")


class FilterQuery(Query):
    """Which samples: shared by `/api/data`, `/api/export` and the Hub push."""

    topic: str | None = Field(None, max_length=MAX_TEXT, description='exact topic, "<Practice Area> - <Topic>"')
    practice_area: str | None = Field(None, max_length=MAX_TEXT, description="every topic of this practice area")
    difficulty: Difficulty | None = None
    sample_type: str | None = Field(None, max_length=MAX_TEXT)
    provider: str | None = Field(None, max_length=MAX_TEXT)
    model: str | None = Field(None, max_length=MAX_TEXT)
    batch_id: str | None = Field(None, max_length=MAX_TEXT)
    flag: FlagCode | None = Field(None, description="only samples carrying this quality flag")
    without_flag: FlagCode | None = Field(None, description="only samples without this quality flag")
    clean: bool | None = Field(None, description="true: leave out samples with a rejecting quality flag")
    min_score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="lowest quality score")
    simulated: bool | None = Field(None, description="only simulated (true) or only real (false) samples")

    def filters(self) -> dict[str, Any]:
        """The filters as `storage.store.Store` takes them."""
        found: dict[str, Any] = {name: getattr(self, name) for name in (*FILTER_COLUMNS, "practice_area", "flag")
                                 if getattr(self, name) is not None}
        excluded = [self.without_flag] if self.without_flag else []
        if self.clean:
            excluded += REJECT_CODES
        if excluded:
            found["exclude_flags"] = list(dict.fromkeys(excluded))
        if self.min_score is not None:
            found["min_score"] = self.min_score
        if self.simulated is not None:
            found["simulated"] = self.simulated
        return found


class DataQuery(FilterQuery):
    limit: int | None = Field(None, ge=0, le=MAX_ROWS, description="at most this many samples (default all)")
    offset: int = Field(0, ge=0, le=MAX_ROWS, description="skip this many samples first")


class ExportQuery(FilterQuery):
    format: ExportFormat = "jsonl"


class RandomQuery(Query):
    count: int = Field(5, ge=1, le=100)
    difficulty: Difficulty | None = None


class SearchQuery(Query):
    q: str = Field(min_length=1, max_length=MAX_TEXT, description="plain text, not a pattern")
    field: SearchField = "all"
    limit: int = Field(50, ge=1, le=1000)


class BatchStatusQuery(Query):
    batch_id: str | None = Field(None, max_length=MAX_TEXT, description="one batch; without it, all recent ones")


class ImportQuery(Query):
    background: bool = Field(False, description="run as a background job whatever the size: 202 with the job "
                                                "(larger imports always do)")
    skip_invalid: bool = Field(False, description="import the valid lines and list the invalid ones as rejected, "
                                                  "instead of refusing the whole content")
