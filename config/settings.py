"""Server settings from environment variables and a `.env` file, parsed by pydantic-settings.

`Settings.load()` is what the server uses: the process environment over `.env` (a variable set in
both takes the environment's value). `Settings.from_env(mapping)` reads only the mapping given
(tests pass a dict; nothing else leaks in), or only the process environment when given none.
A blank value counts as unset. A bad value raises `SettingsError` naming the variable.
"""
from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Mapping

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, DotEnvSettingsSource, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict)

DEFAULT_CORS_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")

# The mapping `from_env` reads instead of the environment and `.env`, for the current call only.
_EXPLICIT_SOURCE: ContextVar[Mapping[str, str] | None] = ContextVar("settings_explicit_source", default=None)


class SettingsError(ValueError):
    """An environment variable holds something unusable; the message names it."""


class _MappingSource(PydanticBaseSettingsSource):
    """Field values looked up by variable name in one given mapping, and nowhere else."""

    def __init__(self, settings_cls: type[BaseSettings], mapping: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.mapping = mapping

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field.validation_alias if isinstance(field.validation_alias, str) else field_name
        return self.mapping.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, name, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[name] = value
        return values


class Settings(BaseSettings):
    """Where the server listens and stores data, and its limits; immutable.

    Fields are set from the variables named by their aliases; keyword overrides use the field names.
    `env` is the raw mapping the settings were read from (provider keys such as GROQ_API_KEY live there).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, populate_by_name=True,
                                      env_file=None)

    host: str = Field("127.0.0.1", validation_alias="HOST")
    port: int = Field(5001, ge=1, le=65535, validation_alias="PORT")
    data_dir: Path = Field(Path("data"), validation_alias="DATA_DIR")
    api_token: str | None = Field(None, validation_alias="API_TOKEN", repr=False)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(DEFAULT_CORS_ORIGINS, validation_alias="CORS_ORIGINS")
    provider_config_file: str | None = Field(None, validation_alias="PROVIDER_CONFIG_FILE")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=1 << 31, validation_alias="MAX_BODY_BYTES")
    # seconds a single generation may wait for a cooling model
    generate_max_wait: float = Field(10.0, ge=0, le=600, allow_inf_nan=False, validation_alias="GENERATE_MAX_WAIT")
    # WSGI worker threads (SSE clients hold one each)
    threads: int = Field(16, ge=2, le=256, validation_alias="SERVER_THREADS")
    # open Server-Sent Events streams at once (each holds a thread); capped by `sse_stream_limit`
    sse_max_streams: int = Field(4, ge=1, le=256, validation_alias="SSE_MAX_STREAMS")
    hf_endpoint: str = Field("https://huggingface.co", validation_alias="HF_ENDPOINT")
    # seconds SIGTERM/SIGINT may take in all: work in flight is abandoned, not waited for, past it
    shutdown_seconds: float = Field(5.0, ge=0, le=600, allow_inf_nan=False, validation_alias="SHUTDOWN_SECONDS")
    # an import of more lines than this runs as a background job (202 and a job to poll)
    import_background_lines: int = Field(5000, ge=1, le=100_000_000, validation_alias="IMPORT_BACKGROUND_LINES")
    # rows a background import stores per transaction; cancellation and shutdown act between chunks
    import_chunk_rows: int = Field(1000, ge=1, le=100_000, validation_alias="IMPORT_CHUNK_ROWS")
    # /api/data's compressed blocks are compressed again, smaller, in the background: only after this
    # many seconds without a write, using at most this share of one core (0 turns it off)
    recompress_idle_seconds: float = Field(2.0, ge=0, le=3600, allow_inf_nan=False,
                                           validation_alias="RECOMPRESS_IDLE_SECONDS")
    recompress_cpu_share: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, validation_alias="RECOMPRESS_CPU_SHARE")

    # PostgreSQL mode: postgresql://user:password@host:port/database (unset: SQLite in DATA_DIR)
    database_url: str | None = Field(None, validation_alias="DATABASE_URL", repr=False)

    # PostgreSQL mode: seconds a batch lease lasts unrenewed; a server that dies mid-batch is
    # replaced by another live server within about this time
    batch_lease_seconds: float = Field(30.0, ge=0.5, le=3600, allow_inf_nan=False, validation_alias="BATCH_LEASE_SECONDS")

    _env: Mapping[str, str] = PrivateAttr(default_factory=lambda: MappingProxyType({}))

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """Strip string values and drop blank ones, so a variable set to "" keeps its default."""
        if not isinstance(data, Mapping):
            return data
        cleaned = {}
        for key, value in data.items():
            if isinstance(value, str):
                value = value.strip()
                if not value:
                    continue
            cleaned[key] = value
        return cleaned

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql://user@host:port/database URL (or unset for SQLite in DATA_DIR)")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = _EXPLICIT_SOURCE.get()
        if explicit is not None:
            return init_settings, _MappingSource(settings_cls, explicit)
        return init_settings, env_settings, dotenv_settings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from `env` only (the process environment when None; `.env` is not read here).
        `overrides` are field values that win over the mapping."""
        source = dict(os.environ if env is None else env)
        token = _EXPLICIT_SOURCE.set(source)
        try:
            settings = cls._build(overrides)
        finally:
            _EXPLICIT_SOURCE.reset(token)
        settings._env = MappingProxyType(source)
        return settings

    @classmethod
    def load(cls, env_file: str | os.PathLike[str] | None = ".env", **overrides: Any) -> "Settings":
        """The server's settings: the process environment over `env_file` (skipped when missing or None),
        then `overrides`. `env` holds the variables of both, the environment's winning."""
        file_values: Mapping[str, str | None] = {}
        if env_file is not None:
            file_values = DotEnvSettingsSource(cls, env_file=env_file).env_vars
        settings = cls._build(overrides, _env_file=env_file)
        settings._env = MappingProxyType({**{k: v for k, v in file_values.items() if v is not None}, **os.environ})
        return settings

    @classmethod
    def _build(cls, overrides: Mapping[str, Any], **source_options: Any) -> "Settings":
        try:
            return cls(**source_options, **overrides)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    def replace(self, *, env: Mapping[str, str] | None = None, **changes: Any) -> "Settings":
        """A copy with some fields (by field name) and/or the raw variables changed; values are validated."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        token = _EXPLICIT_SOURCE.set({})
        try:
            settings = type(self)._build({**current, **changes})
        finally:
            _EXPLICIT_SOURCE.reset(token)
        settings._env = MappingProxyType(dict(self._env if env is None else env))
        return settings

    @property
    def env(self) -> Mapping[str, str]:
        """The raw variables (read-only), including those that are not settings fields."""
        return self._env

    @property
    def sse_stream_limit(self) -> int:
        """How many event streams may be open at once: SSE_MAX_STREAMS, but never more than half of
        SERVER_THREADS, so ordinary requests always keep at least half the threads."""
        return min(self.sse_max_streams, self.threads // 2)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "dataset.sqlite3"


def _variable(location: tuple[int | str, ...]) -> str:
    """The variable name for an error location (overrides report the field name)."""
    if not location:
        return "settings"
    key = str(location[0])
    field = Settings.model_fields.get(key)
    if field is not None and isinstance(field.validation_alias, str):
        return field.validation_alias
    return key


SECRET_VARIABLES = ("API_TOKEN", "DATABASE_URL")   # a refusal never repeats their values


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"]
        variable = _variable(error["loc"])
        got = "(value hidden)" if variable in SECRET_VARIABLES else repr(error["input"])
        problems.append(f"{variable}: {message[:1].lower()}{message[1:]}, got {got}")
    return "; ".join(problems)


__all__ = ["DEFAULT_CORS_ORIGINS", "Settings", "SettingsError"]
