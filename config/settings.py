"""Server settings from environment variables (and a `.env` file, read by `api_server.main`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

DEFAULT_CORS_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")


class SettingsError(ValueError):
    """An environment variable holds something unusable; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5001
    data_dir: Path = Path("data")
    api_token: str | None = None
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    provider_config_file: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    generate_max_wait: float = 10.0       # seconds a single generation may wait for a cooling model
    threads: int = 16                     # WSGI worker threads (SSE clients hold one each)
    hf_endpoint: str = "https://huggingface.co"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)   # provider keys live here

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        source = dict(os.environ if env is None else env)
        origins = source.get("CORS_ORIGINS", "").strip()
        settings = cls(
            host=source.get("HOST", "").strip() or "127.0.0.1",
            port=_int(source, "PORT", 5001, 1, 65535),
            data_dir=Path(source.get("DATA_DIR", "").strip() or "data"),
            api_token=source.get("API_TOKEN", "").strip() or None,
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()) if origins else DEFAULT_CORS_ORIGINS,
            provider_config_file=source.get("PROVIDER_CONFIG_FILE", "").strip() or None,
            max_body_bytes=_int(source, "MAX_BODY_BYTES", 32 * 1024 * 1024, 1024, 1 << 31),
            generate_max_wait=float(_int(source, "GENERATE_MAX_WAIT", 10, 0, 600)),
            threads=_int(source, "SERVER_THREADS", 16, 2, 256),
            hf_endpoint=source.get("HF_ENDPOINT", "").strip() or "https://huggingface.co",
            env=source,
        )
        return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

    @property
    def database_path(self) -> Path:
        return self.data_dir / "dataset.sqlite3"


def _int(source: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = source.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value
