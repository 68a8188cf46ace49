"""Server settings: parsing, errors naming the variable, `.env` under the environment, isolation."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import DEFAULT_CORS_ORIGINS, Settings, SettingsError


def test_defaults_from_an_empty_mapping() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 5001, Path("data"))
    assert settings.api_token is None and settings.provider_config_file is None
    assert settings.cors_origins == DEFAULT_CORS_ORIGINS
    assert (settings.max_body_bytes, settings.generate_max_wait, settings.threads) == (32 * 1024 * 1024, 10.0, 16)
    assert settings.hf_endpoint == "https://huggingface.co" and settings.shutdown_seconds == 5.0
    assert settings.database_path == Path("data") / "dataset.sqlite3"
    assert dict(settings.env) == {}


def test_every_variable_is_read_and_the_wait_may_be_fractional() -> None:
    env = {"HOST": "0.0.0.0", "PORT": " 8080 ", "DATA_DIR": "/srv/data", "API_TOKEN": "s3cret",
           "CORS_ORIGINS": "https://a.example, https://b.example,", "PROVIDER_CONFIG_FILE": "mine.yaml",
           "MAX_BODY_BYTES": "4096", "GENERATE_MAX_WAIT": "2.5", "SERVER_THREADS": "4",
           "HF_ENDPOINT": "http://hub.local", "GROQ_API_KEY": "gsk-x"}
    settings = Settings.from_env(env)
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 8080, Path("/srv/data"))
    assert settings.api_token == "s3cret" and settings.provider_config_file == "mine.yaml"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert (settings.max_body_bytes, settings.generate_max_wait, settings.threads) == (4096, 2.5, 4)
    assert settings.hf_endpoint == "http://hub.local"
    assert settings.env["GROQ_API_KEY"] == "gsk-x" and dict(settings.env) == env
    assert Settings.from_env({"GENERATE_MAX_WAIT": "0.25"}).generate_max_wait == 0.25
    assert Settings.from_env({"SHUTDOWN_SECONDS": "2.5"}).shutdown_seconds == 2.5
    assert "s3cret" not in repr(settings)


def test_blank_values_keep_the_defaults() -> None:
    settings = Settings.from_env({"HOST": "  ", "PORT": "", "API_TOKEN": " ", "CORS_ORIGINS": "",
                                  "GENERATE_MAX_WAIT": ""})
    assert (settings.host, settings.port, settings.api_token) == ("127.0.0.1", 5001, None)
    assert settings.cors_origins == DEFAULT_CORS_ORIGINS and settings.generate_max_wait == 10.0
    assert Settings.from_env({"BATCH_LEASE_SECONDS": ""}).batch_lease_seconds == 30.0


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("GENERATE_MAX_WAIT", "soon", "valid number"),
    ("GENERATE_MAX_WAIT", "601", "less than or equal to 600"),
    ("GENERATE_MAX_WAIT", "-1", "greater than or equal to 0"),
    ("GENERATE_MAX_WAIT", "nan", "finite"),
    ("SHUTDOWN_SECONDS", "-1", "greater than or equal to 0"),
    ("SHUTDOWN_SECONDS", "601", "less than or equal to 600"),
    ("SHUTDOWN_SECONDS", "inf", "finite"),
    ("PORT", "http", "valid integer"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("SERVER_THREADS", "1", "greater than or equal to 2"),
    ("SERVER_THREADS", "2.5", "valid integer"),
    ("MAX_BODY_BYTES", "10", "greater than or equal to 1024"),
    ("BATCH_LEASE_SECONDS", "0.1", "greater than or equal to 0.5"),
    ("BATCH_LEASE_SECONDS", "inf", "finite"),
])
def test_a_bad_value_is_a_settings_error_naming_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ") and words in message and repr(value) in message


def test_overrides_use_field_names_win_over_the_mapping_and_are_validated() -> None:
    settings = Settings.from_env({"PORT": "6000", "HOST": "h"}, port=7000, data_dir=Path("/tmp/x"))
    assert (settings.port, settings.host, settings.data_dir) == (7000, "h", Path("/tmp/x"))
    with pytest.raises(SettingsError, match=r"^PORT: "):
        Settings.from_env({}, port=0)


def test_settings_are_immutable_and_replace_returns_a_validated_copy() -> None:
    settings = Settings.from_env({"PORT": "6000", "GROQ_API_KEY": "k"})
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.env["GROQ_API_KEY"] = "other"  # type: ignore[index]
    moved = settings.replace(data_dir=Path("elsewhere"), env={"CEREBRAS_API_KEY": "c"})
    assert (moved.port, moved.data_dir, dict(moved.env)) == (6000, Path("elsewhere"), {"CEREBRAS_API_KEY": "c"})
    assert settings.replace(threads=8).env == settings.env and settings.data_dir == Path("data")
    with pytest.raises(SettingsError, match=r"^SERVER_THREADS: "):
        settings.replace(threads=1)


def test_an_explicit_mapping_reads_neither_the_environment_nor_dotenv(tmp_path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("PORT=6100\nHOST=from-dotenv\nGROQ_API_KEY=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVER_THREADS", "7")
    monkeypatch.setenv("GROQ_API_KEY", "from-environment")
    settings = Settings.from_env({"HOST": "given"})
    assert (settings.host, settings.port, settings.threads) == ("given", 5001, 16)
    assert dict(settings.env) == {"HOST": "given"}
    # without a mapping: the process environment only, still not .env
    from_process = Settings.from_env()
    assert (from_process.threads, from_process.port) == (7, 5001)
    assert from_process.env["GROQ_API_KEY"] == "from-environment"


def test_load_reads_dotenv_and_the_environment_wins(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("# comment\nPORT=6100\nHOST=from-dotenv\nGENERATE_MAX_WAIT=1.5\n"
                      "GROQ_API_KEY=gsk-dotenv\nCEREBRAS_API_KEY=csk-dotenv\n")
    for name in ("PORT", "HOST", "GENERATE_MAX_WAIT", "GROQ_API_KEY", "CEREBRAS_API_KEY", "SERVER_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOST", "from-environment")
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-environment")
    settings = Settings.load(env_file=dotenv, threads=3)
    assert (settings.port, settings.host, settings.generate_max_wait, settings.threads) == (
        6100, "from-environment", 1.5, 3)
    assert settings.env["GROQ_API_KEY"] == "gsk-dotenv"             # only in .env
    assert settings.env["CEREBRAS_API_KEY"] == "csk-environment"    # both: the environment wins
    assert settings.env["HOST"] == "from-environment"


def test_load_without_a_dotenv_file_uses_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PORT", "6200")
    assert Settings.load(env_file=tmp_path / "missing.env").port == 6200
    assert Settings.load(env_file=None).port == 6200


def test_load_reports_a_bad_dotenv_value_by_name(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SERVER_THREADS", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text("SERVER_THREADS=many\n")
    with pytest.raises(SettingsError, match=r"^SERVER_THREADS: .*'many'"):
        Settings.load(env_file=dotenv)
