"""Settings precedence and validation, and the ``daytwo`` command's help and failures.

Precedence, highest first: CLI flag > ``DAYTWO_*`` environment > YAML file > default.
The CLI tests run the real typer app (in-process for ``--help``, as a subprocess where
the exit status and stderr of a real ``daytwo`` process matter).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.core import TyperGroup, TyperOption
from typer.main import get_command
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
_BOX_CHARACTERS = re.compile(r"[│╭╮╰╯─┃━]")


def _strip_daytwo_env() -> dict[str, str]:
    """Remove every DAYTWO_* variable from os.environ; return them for restoring."""
    removed = {k: v for k, v in os.environ.items() if k.startswith("DAYTWO_")}
    for key in removed:
        del os.environ[key]
    return removed


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DAYTWO_* from the outer environment (e.g. a CI's external Kafka) leaks in."""
    for key in [k for k in os.environ if k.startswith("DAYTWO_")]:
        monkeypatch.delenv(key)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence ----------------------------------------------------------------------------


def test_cli_beats_env_beats_yaml_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_yaml(
        tmp_path / "daytwo.yaml",
        "flush_interval_seconds: 7\ntopic_prefix: yaml.\npartitions: 3\n",
    )
    monkeypatch.setenv("DAYTWO_FLUSH_INTERVAL_SECONDS", "8")
    monkeypatch.setenv("DAYTWO_TOPIC_PREFIX", "env.")
    loaded = load_settings(config=config, flush_interval_seconds=9.0)
    assert loaded.flush_interval_seconds == 9.0  # CLI
    assert loaded.topic_prefix == "env."  # env over YAML
    assert loaded.partitions == 3  # YAML over default
    assert loaded.metrics_port == Settings.model_fields["metrics_port"].default  # default
    # A flag that was not given (None) does not hide the lower sources.
    assert load_settings(config=config, flush_interval_seconds=None).flush_interval_seconds == 8


def test_the_yaml_file_can_be_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_yaml(tmp_path / "daytwo.yaml", "worker_app_id: from-yaml\n")
    monkeypatch.setenv("DAYTWO_CONFIG", str(config))
    assert load_settings().worker_app_id == "from-yaml"
    # The CLI's --config wins over DAYTWO_CONFIG.
    other = write_yaml(tmp_path / "other.yaml", "worker_app_id: from-cli-file\n")
    assert load_settings(config=other).worker_app_id == "from-cli-file"


def test_env_values_are_parsed_to_the_fields_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAYTWO_BROKER_IS_EMBEDDED", "1")
    monkeypatch.setenv("DAYTWO_MIN_SAMPLES", "15")
    monkeypatch.setenv("DAYTWO_DATA_DIR", "/var/lib/daytwo")
    monkeypatch.setenv("DAYTWO_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    loaded = load_settings()
    assert loaded.broker_is_embedded is True
    assert loaded.min_samples == 15
    assert loaded.data_dir == Path("/var/lib/daytwo")
    assert loaded.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"


SOURCE_VALUE = st.none() | st.integers(min_value=1, max_value=1024)


@settings(max_examples=60, deadline=None)
@given(cli=SOURCE_VALUE, env=SOURCE_VALUE, yaml=SOURCE_VALUE)
def test_precedence_holds_for_any_combination_of_sources(
    cli: int | None, env: int | None, yaml: int | None
) -> None:
    default = Settings.model_fields["partitions"].default
    expected = next((v for v in (cli, env, yaml) if v is not None), default)
    saved = _strip_daytwo_env()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            config = None
            if yaml is not None:
                config = write_yaml(Path(scratch) / "s.yaml", f"partitions: {yaml}\n")
            if env is not None:
                os.environ["DAYTWO_PARTITIONS"] = str(env)
            assert load_settings(config=config, partitions=cli).partitions == expected
    finally:
        _strip_daytwo_env()
        os.environ.update(saved)


# -- validation ----------------------------------------------------------------------------


def test_a_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAYTWO_PARTITIONS", "0")
    with pytest.raises(ConfigError, match="partitions"):
        load_settings()


def test_a_bad_yaml_value_names_the_field(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "s.yaml", "flush_interval_seconds: soon\n")
    with pytest.raises(ConfigError, match="flush_interval_seconds"):
        load_settings(config=config)


def test_a_bad_cli_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match="kafka_bootstrap"):
        load_settings(kafka_bootstrap="no-port-here")


def test_an_unknown_yaml_key_is_refused_by_name(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "s.yaml", "flush_intervall_seconds: 3\n")
    with pytest.raises(ConfigError, match="flush_intervall_seconds"):
        load_settings(config=config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "mapping"), ("a: [unclosed\n", "not valid YAML")],
)
def test_a_malformed_yaml_file_is_named(tmp_path: Path, text: str, expected: str) -> None:
    config = write_yaml(tmp_path / "s.yaml", text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings(config=config)
    assert str(config) in str(raised.value)


def test_a_missing_yaml_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_settings(config=missing)


def test_settings_are_frozen() -> None:
    loaded = load_settings()
    with pytest.raises(ValidationError):
        loaded.partitions = 5  # pydantic's frozen model refuses it at run time


# -- the command line -----------------------------------------------------------------------


def _commands() -> dict[str, Any]:
    """The sub-commands by name (typer vendors its own click, so no click types here)."""
    group = get_command(app)
    assert isinstance(group, TyperGroup)
    return dict(group.commands)


def _flatten(help_text: str) -> str:
    """Help as one line: box drawing removed and whitespace collapsed (undoes wrapping)."""
    return " ".join(_BOX_CHARACTERS.sub(" ", help_text).split())


def _help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return _flatten(result.output)


def test_top_level_help_lists_every_command() -> None:
    text = _help_of()
    assert "Usage: daytwo" in text
    for name, command in _commands().items():
        summary = (command.help or "").strip().splitlines()[0]
        assert name in text
        assert _flatten(summary) in text


def _iter_setting_options() -> Iterator[tuple[str, TyperOption, str]]:
    for name, command in _commands().items():
        for param in command.params:
            if isinstance(param, TyperOption) and param.name in Settings.model_fields:
                yield name, param, Settings.model_fields[param.name].description or ""


@pytest.mark.parametrize("command", sorted(_commands()))
def test_each_command_help_shows_the_settings_descriptions(command: str) -> None:
    text = _help_of(command)
    assert f"Usage: daytwo {command}" in text
    options = [(opt, desc) for name, opt, desc in _iter_setting_options() if name == command]
    for option, description in options:
        assert option.help == description, f"{command} {option.opts}: help is not the field's"
        assert _flatten(description) in text, f"{command} --help lacks {option.opts}'s text"
        assert option.opts[0] in text


def test_the_process_commands_expose_settings_as_flags() -> None:
    per_command: dict[str, set[str]] = {}
    for name, option, _ in _iter_setting_options():
        per_command.setdefault(name, set()).add(str(option.name))
    for command in ("agent", "worker", "sink"):
        assert {"kafka_bootstrap", "topic_prefix", "config"} <= per_command.get(command, set())


def test_a_bad_flag_value_exits_2_naming_the_field() -> None:
    result = CliRunner().invoke(app, ["worker", "--flush-interval", "-1"])
    assert result.exit_code == 2
    assert "flush_interval_seconds" in result.output


def _run_daytwo(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYTWO_")}
    env["DAYTWO_DATA_DIR"] = str(cwd / "data")
    env["DAYTWO_METRICS_PORT"] = "0"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [["worker"], ["agent", "--mapping", "mapping.yaml"], ["sink", "--repo", "."]],
    ids=["worker", "agent", "sink"],
)
def test_a_process_without_kafka_exits_non_zero_with_the_hint(
    tmp_path: Path, args: list[str]
) -> None:
    completed = _run_daytwo(args, tmp_path)
    assert completed.returncode != 0
    assert "DAYTWO_KAFKA_BOOTSTRAP" in completed.stderr
    assert "daytwo broker" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "data").exists(), "a failed start left files behind"
