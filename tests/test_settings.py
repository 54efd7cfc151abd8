from __future__ import annotations

import pytest

from app import create_app
from app.settings import SettingsError, load_settings
from app.upstream.demo import DemoLLM
from app.upstream.llm import OpenAILLM


def test_defaults_follow_the_spec() -> None:
    config = load_settings({})
    assert config["OPENAI_API_KEY"] is None
    assert config["OPENAI_BASE_URL"] is None
    assert config["OPENAI_MODEL"] == "gpt-4o-mini"
    assert config["OPENAI_API"] == "chat"
    assert config["LLM_PROVIDER"] == "auto"
    assert config["PROVIDER"] == "demo"
    assert config["ALLOWED_MODELS"] == ("gpt-4o-mini",)
    assert config["LOG_LEVEL"] == "INFO"
    assert config["LOG_FORMAT"] == "text"
    assert config["MAX_MESSAGE_CHARS"] == 32000
    assert config["UPSTREAM_TIMEOUT_S"] == 60.0
    assert config["OPENAI_STREAM_USAGE"] is True
    assert config["OPENAI_MAX_RETRIES"] == 0
    assert config["DEMO_DELAY_MS"] == 20.0


def test_values_are_typed_and_trimmed() -> None:
    config = load_settings(
        {
            "OPENAI_API": " Responses ",
            "UPSTREAM_TIMEOUT_S": "2.5",
            "MAX_MESSAGE_CHARS": "100",
            "OPENAI_STREAM_USAGE": "false",
            "LOG_LEVEL": "debug",
            "ALLOWED_MODELS": "gpt-4o, llama3 ,,gpt-4o",
        }
    )
    assert config["OPENAI_API"] == "responses"
    assert config["UPSTREAM_TIMEOUT_S"] == 2.5
    assert config["MAX_MESSAGE_CHARS"] == 100
    assert config["OPENAI_STREAM_USAGE"] is False
    assert config["LOG_LEVEL"] == "DEBUG"
    # The default model is always allowed: a request that names none uses it.
    assert config["ALLOWED_MODELS"] == ("gpt-4o-mini", "gpt-4o", "llama3")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENAI_API", "completions"),
        ("LLM_PROVIDER", "anthropic"),
        ("UPSTREAM_TIMEOUT_S", "soon"),
        ("UPSTREAM_TIMEOUT_S", "0"),
        ("UPSTREAM_TIMEOUT_S", "nan"),
        ("MAX_MESSAGE_CHARS", "1.5"),
        ("MAX_MESSAGE_CHARS", "-3"),
        ("DEMO_DELAY_MS", "fast"),
        ("OPENAI_STREAM_USAGE", "maybe"),
        ("OPENAI_MAX_RETRIES", "11"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("OPENAI_BASE_URL", "localhost:11434/v1"),
        ("OPENAI_BASE_URL", "ftp://example.com"),
        ("OPENAI_BASE_URL", "https://"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert message.startswith(name)
    assert repr(value) in message
    assert message.count(".") >= 1 and "\n" not in message


@pytest.mark.parametrize(
    ("environ", "provider"),
    [
        ({}, "demo"),
        ({"OPENAI_API_KEY": "sk-abc"}, "openai"),
        ({"OPENAI_BASE_URL": "http://localhost:11434/v1"}, "openai"),
        ({"OPENAI_API_KEY": "sk-abc", "LLM_PROVIDER": "demo"}, "demo"),
        ({"OPENAI_API_KEY": "sk-abc", "LLM_PROVIDER": "openai"}, "openai"),
        ({"OPENAI_API_KEY": "  "}, "demo"),
    ],
)
def test_provider_resolution(environ: dict[str, str], provider: str) -> None:
    assert load_settings(environ)["PROVIDER"] == provider


def test_openai_provider_without_a_key_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match=r"^LLM_PROVIDER is 'openai' but OPENAI_API_KEY is not set"):
        load_settings({"LLM_PROVIDER": "openai"})


def test_factory_reads_the_environment_when_given_no_test_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_API", "responses")
    app = create_app()
    assert app.config["OPENAI_MODEL"] == "env-model"
    assert app.config["OPENAI_API"] == "responses"
    assert isinstance(app.extensions["llm"], OpenAILLM)
    assert app.extensions["llm"].client.api_key == "sk-from-env"


def test_factory_ignores_the_environment_when_given_a_test_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    app = create_app({"TESTING": True})
    assert app.testing
    assert app.config["OPENAI_MODEL"] == "gpt-4o-mini"
    assert isinstance(app.extensions["llm"], DemoLLM)


def test_factory_refuses_a_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TIMEOUT_S", "later")
    with pytest.raises(SettingsError, match="UPSTREAM_TIMEOUT_S"):
        create_app()


def test_client_uses_the_timeout_and_retry_settings() -> None:
    app = create_app(
        {
            "OPENAI_API_KEY": "sk-x",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "UPSTREAM_TIMEOUT_S": "7",
            "OPENAI_MAX_RETRIES": "2",
        }
    )
    sdk = app.extensions["llm"].client
    assert sdk.max_retries == 2
    assert sdk.timeout.read == 7 and sdk.timeout.connect == 7
    assert str(sdk.base_url) == "http://127.0.0.1:9/v1/"


def test_exposure_settings_default_to_the_spec() -> None:
    config = load_settings({})
    assert config["REQUEST_BODY_TIMEOUT_S"] == 30.0
    assert config["CLIENT_WRITE_TIMEOUT_S"] == 60.0
    assert config["MAX_STREAMS_PER_CLIENT"] == 0
    assert config["AUTH_FAILURE_LIMIT"] == "60/minute"
    assert config["CORS_ORIGINS"] == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REQUEST_BODY_TIMEOUT_S", "0"),
        ("REQUEST_BODY_TIMEOUT_S", "soon"),
        ("CLIENT_WRITE_TIMEOUT_S", "-1"),
        ("MAX_STREAMS_PER_CLIENT", "2.5"),
        ("MAX_STREAMS_PER_CLIENT", "-1"),
        ("AUTH_FAILURE_LIMIT", "lots"),
    ],
)
def test_bad_exposure_settings_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must be"):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("https://*.example.com", "is not one"),
        ("*.example.com", "is not one"),
        ("https://app.example.com/", "is not one"),
        ("https://app.example.com/path", "is not one"),
        ("app.example.com", "is not one"),
        ("//app.example.com", "is not one"),
        ("https://app.example.com:99999", "port outside"),
        ("https://app.example.com:443", "default port"),
    ],
)
def test_cors_origins_must_be_exact(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=r"^CORS_ORIGINS") as error:
        load_settings({"CORS_ORIGINS": value})
    assert repr(value) in str(error.value) and says in str(error.value)


def test_exact_origins_and_the_wildcard_are_accepted() -> None:
    value = "https://App.Example.com, http://localhost:3000, http://[::1]:8080, *"
    origins = load_settings({"CORS_ORIGINS": value})["CORS_ORIGINS"]
    assert origins == ("https://app.example.com", "http://localhost:3000", "http://[::1]:8080", "*")


def test_replies_settings_default_to_the_spec() -> None:
    config = load_settings({})
    assert config["REDIS_URL"] is None
    assert config["RATE_LIMIT_STORAGE_URI"] == "memory://"
    assert config["REPLY_ON_DISCONNECT"] == "finish"


def test_one_redis_serves_everything_unless_the_limits_are_sent_elsewhere() -> None:
    shared = load_settings({"REDIS_URL": "redis://cache:6379/0"})
    assert (shared["REDIS_URL"], shared["RATE_LIMIT_STORAGE_URI"]) == ("redis://cache:6379/0",) * 2
    apart = load_settings({"REDIS_URL": "rediss://cache:6380/0", "RATE_LIMIT_STORAGE_URI": "memory://"})
    assert (apart["REDIS_URL"], apart["RATE_LIMIT_STORAGE_URI"]) == ("rediss://cache:6380/0", "memory://")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REDIS_URL", "cache:6379", "REDIS_URL must be a redis:// or rediss:// URL; got 'cache:6379'."),
        (
            "REDIS_URL",
            "http://user:hunter2@cache",
            "REDIS_URL must be a redis:// or rediss:// URL; got 'http://user:***@cache'.",
        ),
        ("REPLY_ON_DISCONNECT", "linger", "REPLY_ON_DISCONNECT must be one of finish, stop; got 'linger'."),
    ],
)
def test_bad_replies_settings_stop_start_up(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert str(caught.value) == says
