"""Configuration: shipped defaults, the user's override file, and start-up validation."""
from __future__ import annotations

import pytest

from config.providers import ConfigError, load_config, parse_config, _read_yaml, SHIPPED_CONFIG


def test_shipped_defaults_hold_the_fallback_orders_of_the_old_system():
    config = load_config(env={})
    groq = [m.id for m in config.providers["groq"].models]
    cerebras = [m.id for m in config.providers["cerebras"].models]
    assert groq == ["llama-3.3-70b-versatile", "llama-3.1-8b-instant", "openai/gpt-oss-120b",
                    "openai/gpt-oss-20b", "llama-3.1-70b-versatile", "mixtral-8x7b-32768",
                    "llama-3.2-90b-text-preview", "llama-3.2-11b-text-preview", "gemma2-9b-it"]
    assert cerebras == ["qwen-3-235b-a22b-thinking-2507", "qwen-3-235b-a22b-instruct-2507", "llama-3.3-70b",
                        "gpt-oss-120b", "qwen-3-32b", "llama3.1-8b", "qwen-3-coder-480b"]
    coder = config.providers["cerebras"].model("qwen-3-coder-480b")
    assert coder.limits.rpd == 100
    thinking = config.providers["cerebras"].model("qwen-3-235b-a22b-thinking-2507")
    assert thinking.thinking and config.providers["cerebras"].completion_budget(thinking) > \
        config.providers["cerebras"].max_completion_tokens
    assert config.providers["cerebras"].model("llama-3.3-70b").limits.rpd == 14400


def test_user_file_overrides_the_shipped_file(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(
        "engine:\n  max_attempts: 3\n"
        "providers:\n  groq:\n    temperature: 0.2\n    models:\n      - id: only-model\n        limits: {rpm: 5}\n")
    config = load_config(env={"PROVIDER_CONFIG_FILE": str(user)})
    assert config.engine.max_attempts == 3
    assert [m.id for m in config.providers["groq"].models] == ["only-model"]
    assert config.providers["groq"].temperature == 0.2
    assert config.providers["groq"].api_key_env == "GROQ_API_KEY"  # untouched keys survive the merge
    assert len(config.providers["cerebras"].models) == 7


def test_extra_openai_compatible_provider_can_be_declared(tmp_path):
    user = tmp_path / "extra.yaml"
    user.write_text(
        "engine:\n  provider_order: [groq, cerebras, local]\n"
        "providers:\n  local:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    requires_key: false\n"
        "    models:\n      - id: llama3.1:8b\n")
    config = load_config(user)
    assert config.providers["local"].kind == "openai"
    assert config.engine.provider_order[-1] == "local"


def _raw():
    return _read_yaml(SHIPPED_CONFIG)


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r["engine"].update(provider_order=["groq", "nebula"]), "engine.provider_order: unknown provider 'nebula'"),
    (lambda r: r["engine"].update(default_provider="nebula"), "engine.default_provider: unknown provider 'nebula'"),
    (lambda r: r["providers"]["groq"].update(kind="nebula"), "providers.groq.kind"),
    (lambda r: r["providers"]["groq"].update(models=[]), "providers.groq.models: the fallback order is empty"),
    (lambda r: r["providers"]["cerebras"]["models"].append({"id": "llama-3.3-70b"}),
     "providers.cerebras.models: 'llama-3.3-70b' appears twice (a cycle"),
    (lambda r: r["engine"].update(provider_order=["groq", "cerebras", "groq"]), "'groq' appears twice (a cycle"),
    (lambda r: r["providers"]["groq"]["models"][2]["limits"].update(rpm=-1),
     "providers.groq.models[2:openai/gpt-oss-120b].limits.rpm"),
    (lambda r: r["engine"].update(cooldowns={"rate_limit": -5}), "cooldowns.rate_limit: must be >= 0"),
    (lambda r: r["engine"].update(cooldowns={"sunspots": 5}), "engine.cooldowns.sunspots: unknown failure category"),
    (lambda r: r["providers"]["groq"].update(colour="blue"), "providers.groq.colour"),
    (lambda r: r["engine"].update(strategy="random"), "engine.strategy: Input should be 'order'"),
])
def test_invalid_configuration_fails_naming_the_bad_entry(mutate, expected):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert expected in str(caught.value)


def test_missing_or_broken_user_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
