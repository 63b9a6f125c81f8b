"""Settings: environment over YAML over defaults; a bad value stops start-up with one line naming it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_environment():
    settings = Settings.load({})
    assert settings.port == 3000 and settings.slack_api_url == "https://slack.com/api/"
    assert settings.required_approvals == 2 and settings.reminder_days == (90, 30, 7)


def test_environment_values_are_parsed_to_their_types():
    settings = Settings.load({"MESHBOT_PORT": "8080", "MESHBOT_ALLOWED_CHANNELS": "C01ABC, C02DEF",
                              "MESHBOT_READ_CA_SECRETS": "yes", "SLACK_API_URL": "http://127.0.0.1:9/api",
                              "MESHBOT_EXTRA_SECRETS": "istio-system/gw-cert"})
    assert settings.port == 8080
    assert settings.allowed_channels == ("C01ABC", "C02DEF")
    assert settings.read_ca_secrets is True
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert settings.extra_secrets == (("istio-system", "gw-cert"),)


@pytest.mark.parametrize("env, name", [
    ({"MESHBOT_PORT": "eighty"}, "MESHBOT_PORT"),
    ({"MESHBOT_PORT": "70000"}, "MESHBOT_PORT"),
    ({"MESHBOT_CHANNEL": "#incidents"}, "MESHBOT_CHANNEL"),
    ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL"),
    ({"MESHBOT_REQUIRED_APPROVALS": "0"}, "MESHBOT_REQUIRED_APPROVALS"),
    ({"MESHBOT_APPROVERS": "alice"}, "MESHBOT_APPROVERS"),
    ({"MESHBOT_TIMEZONE": "Mars/Olympus"}, "MESHBOT_TIMEZONE"),
    ({"MESHBOT_ISTIO_NAMESPACE": "Istio_System"}, "MESHBOT_ISTIO_NAMESPACE"),
])
def test_malformed_value_is_one_line_naming_the_variable(env, name):
    with pytest.raises(SettingsError) as caught:
        Settings.load(env)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message


def test_yaml_file_is_read_and_environment_wins(tmp_path):
    config = tmp_path / "meshbot.yaml"
    config.write_text("port: 9000\nchannel: C0INCIDENT\nallowed_channels: [C0A1, C0B2]\nMESHBOT_WORKERS: 4\n")
    settings = Settings.load({"MESHBOT_PORT": "9100"}, config_file=config)
    assert settings.port == 9100 and settings.channel == "C0INCIDENT"
    assert settings.allowed_channels == ("C0A1", "C0B2") and settings.workers == 4


def test_unknown_yaml_keys_are_refused(tmp_path):
    config = tmp_path / "meshbot.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load({}, config_file=config)


def test_secrets_can_come_from_files(tmp_path):
    token = tmp_path / "token"
    token.write_text("xoxb-from-a-file\n")
    assert Settings.load({"SLACK_BOT_TOKEN_FILE": str(token)}).slack_bot_token == "xoxb-from-a-file"


def test_repr_and_errors_never_show_secrets():
    settings = Settings.load({"SLACK_BOT_TOKEN": "xoxb-very-secret", "SLACK_SIGNING_SECRET": "sssh-secret"})
    assert "xoxb-very-secret" not in repr(settings) and "sssh-secret" not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        Settings.load({"MESHBOT_READ_CA_SECRETS": "maybe"})
    assert "maybe" in str(caught.value)  # not a secret, shown to help


def test_serve_without_a_token_stops_with_one_line_and_exit_78(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "serve"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 78
    assert result.stderr.strip() == "meshbot: configuration error: SLACK_BOT_TOKEN is required"


def test_settings_page_table_matches_the_settings():
    text = (ROOT / "docs" / "settings.md").read_text()
    block = text.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert block == settings_table(), "run `meshbot settings --markdown` and paste it into docs/settings.md"


def test_an_unknown_log_level_stops_serve_with_one_line_and_exit_78_not_a_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLACK_BOT_TOKEN": "xoxb-test",
           "SLACK_SIGNING_SECRET": "test-secret", "MESHBOT_DB": str(tmp_path / "meshbot.db"),
           "MESHBOT_LOG_LEVEL": "verbose"}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "serve"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 78
    assert result.stderr.strip() == ("meshbot: configuration error: MESHBOT_LOG_LEVEL: 'verbose' is invalid: "
                                     "expected one of DEBUG, INFO, WARNING, ERROR")


def test_log_level_is_case_insensitive():
    assert Settings.load({"MESHBOT_LOG_LEVEL": "debug"}).log_level == "DEBUG"


@pytest.mark.parametrize("env, pasted", [
    ({"MESHBOT_AUDIT_KEY": "hunter2-too-short"}, "hunter2-too-short"),            # a secret setting
    ({"MESHBOT_WORKERS": "xoxb-1234-5678-pasted-here"}, "xoxb-1234-5678-pasted-here"),  # a token in the wrong place
    ({"SLACK_API_URL": "https://meshbot:s3cr3t-pw@slack.example/api/"}, "s3cr3t-pw"),
])
def test_setting_errors_never_echo_a_secret(env, pasted):
    with pytest.raises(SettingsError) as caught:
        Settings.load(env)
    assert pasted not in str(caught.value)
    assert str(caught.value).startswith(f"{next(iter(env))}: the value (hidden) is invalid")


def test_secret_file_errors_never_echo_its_content(tmp_path):
    key = tmp_path / "audit-key"
    key.write_text("short-secret-in-a-file\n")
    with pytest.raises(SettingsError) as caught:
        Settings.load({"MESHBOT_AUDIT_KEY_FILE": str(key)})
    assert "short-secret-in-a-file" not in str(caught.value)


@pytest.mark.parametrize("name", ["SLACK_API_URL", "MESHBOT_ISTIOD_URL"])
@pytest.mark.parametrize("url, complaint", [
    ("ftp://slack.example/api", "expected an http:// or https:// URL"),
    ("https://user:pw@slack.example/api", "must not carry credentials"),
    ("https:///api", "has no host"),
    ("https://slack.example/api?token=x", "must not have a query or fragment"),
    ("http://istiod:port/", "not a valid URL"),
])
def test_url_settings_are_http_urls_with_a_host_and_no_credentials(name, url, complaint):
    with pytest.raises(SettingsError, match=complaint):
        Settings.load({name: url})


def test_a_plain_istiod_url_is_accepted_as_given():
    settings = Settings.load({"MESHBOT_ISTIOD_URL": "http://istiod.istio-system:15014"})
    assert settings.istiod_url == "http://istiod.istio-system:15014"


def test_roles_default_to_the_safe_audiences_and_refuse_unknown_ones():
    from bot.settings import Audience

    settings = Settings.load({})
    assert settings.diagnostics_audience is Audience.EVERYONE
    assert settings.request_audience is Audience.RESPONDERS and settings.resolve_audience is Audience.RESPONDERS
    assert Settings.load({"MESHBOT_RESOLVE_BY": "Approvers"}).resolve_audience is Audience.APPROVERS
    with pytest.raises(SettingsError, match="MESHBOT_REQUEST_BY: 'anyone' is invalid"):
        Settings.load({"MESHBOT_REQUEST_BY": "anyone"})


def test_shutdown_grace_defaults_below_kubernetes_termination_grace_period():
    assert Settings.load({}).shutdown_grace_seconds == 20.0  # terminationGracePeriodSeconds defaults to 30


# -- issue 24 item 6: no secret echoed, no number that is not finite and bounded -----------------------------


@pytest.mark.parametrize("name, value", [
    ("MESHBOT_SHUTDOWN_GRACE_SECONDS", "inf"), ("MESHBOT_KUBE_TIMEOUT", "nan"), ("MESHBOT_PROMETHEUS_TIMEOUT", "-inf"),
    ("MESHBOT_HTTP_LOOP_SECONDS", "1e400"), ("MESHBOT_THREAD_BATCH_SECONDS", "NaN"),
])
def test_nan_and_infinite_durations_are_refused_with_a_clear_error(name, value):
    with pytest.raises(SettingsError) as refused:
        Settings.load({name: value})
    assert str(refused.value).startswith(f"{name}: ") and "not a finite number (nan and inf are refused)" in \
        str(refused.value)


def test_durations_and_counts_are_bounded():
    with pytest.raises(SettingsError, match="MESHBOT_KUBE_TIMEOUT: .* must be at most 86400 \\(a day\\)"):
        Settings.load({"MESHBOT_KUBE_TIMEOUT": "1e12"})
    with pytest.raises(SettingsError, match="MESHBOT_WORKERS: .* out of range"):
        Settings.load({"MESHBOT_WORKERS": "9" * 30})


@pytest.mark.parametrize("value, problem", [
    ("-0.5", "must be 0 \\(background work never waits for answers\\) or more"),
    ("3.5", "must be at most 3 \\(Slack's deadline for an ack\\)"), ("nan", "not a finite number"),
    ("soon", "not a number"),
])
def test_answers_first_seconds_outside_0_to_slacks_3_s_deadline_is_refused(value, problem):
    with pytest.raises(SettingsError, match=f"MESHBOT_ANSWERS_FIRST_SECONDS: .*{problem}"):
        Settings.load({"MESHBOT_ANSWERS_FIRST_SECONDS": value})


def test_answers_first_seconds_defaults_to_2_and_0_turns_it_off():
    assert Settings.load({}).answers_first_seconds == 2.0
    assert Settings.load({"MESHBOT_ANSWERS_FIRST_SECONDS": "0"}).answers_first_seconds == 0.0


def test_a_configured_secret_pasted_into_another_setting_is_not_echoed():
    token = "test-signing-secret-value"
    with pytest.raises(SettingsError) as refused:
        Settings.load({"SLACK_SIGNING_SECRET": token, "MESHBOT_CHANNEL": token})
    assert "MESHBOT_CHANNEL: the value (hidden) is invalid" in str(refused.value)
    assert token not in str(refused.value)


def test_a_high_entropy_value_in_a_plain_setting_is_not_echoed_but_a_name_is():
    api_key = "9fK2xQ7vLm3ZpR8tY4wN6bH1"
    with pytest.raises(SettingsError) as refused:
        Settings.load({"MESHBOT_CHANNEL": api_key})
    assert api_key not in str(refused.value) and "(hidden)" in str(refused.value)
    with pytest.raises(SettingsError) as named:
        Settings.load({"MESHBOT_CHANNEL": "#payments-incidents"})
    assert "'#payments-incidents' is invalid" in str(named.value)


def test_repr_hides_a_plain_setting_that_holds_a_configured_secret():
    token = "xoxb-1234-5678-abcdefghijklmnop"
    settings = Settings.load({"SLACK_BOT_TOKEN": token})
    assert "slack_bot_token='(set)'" in repr(settings) and "istio_namespace='istio-system'" in repr(settings)
    leaky = dataclasses.replace(settings, channel=token)  # e.g. set in code by a test or a tool, not parsed
    assert token not in repr(leaky) and "channel='(hidden)'" in repr(leaky)
