"""The ``brokerkernel plugins`` and ``brokerkernel config check`` commands.

Most tests call :func:`brokerkernel.kernel.cli.main` in-process; the last ones run
the installed console script as a real subprocess from the repository root, where
the repository's own ``plugins.toml`` is found.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from brokerkernel.kernel.cli import main
from brokerkernel.kernel.plugins import ENTRY_POINT_GROUP

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "brokerkernel"
ACME_SRC = REPO / "tests" / "thirdparty" / "acme_risk" / "src"

ACME_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_volume": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 50,
            "description": "Largest order volume in lots; larger orders are rejected.",
        },
        "api_key": {
            "type": "string",
            "writeOnly": True,
            "default": "",
            "description": "ACME risk-service API key (a secret: redacted when shown).",
        },
    },
}
MARGIN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min_margin_level": {
            "type": ["number", "null"],
            "minimum": 0,
            "default": None,
            "description": "Refuse deals that leave margin level (equity / margin x 100) "
            "below this percent; null disables the check.",
        }
    },
}

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write ``plugins.toml`` in ``tmp_path`` and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "plugins.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def third_party_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``acme-risk 0.1.0`` and a broken ``acme-broken 2.3.4`` "installed" via dist-info."""
    site = tmp_path / "site-packages"
    for name, version, entry_point, module in (
        ("acme-risk", "0.1.0", "acme_risk", "acme_risk"),
        ("acme-broken", "2.3.4", "broken", "acme_broken_plugin"),
    ):
        dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\n{entry_point} = {module}\n", encoding="utf-8"
        )
        monkeypatch.delitem(sys.modules, module, raising=False)
    (site / "acme_broken_plugin.py").write_text(
        'raise ImportError("acme_vendor_sdk is required")\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(ACME_SRC))
    importlib.invalidate_caches()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def repo_enabled_plugins() -> list[str]:
    """Plugins the repository's plugins.toml enables, read here with tomllib."""
    with (REPO / "plugins.toml").open("rb") as fh:
        sections = tomllib.load(fh).get("plugins", {})
    return sorted(name for name, section in sections.items() if section.get("enabled", True))


# ------------------------------------------------------------------ config check


def test_config_check_prints_the_enabled_plugins_and_exits_0(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        """
        [kernel]
        execution_venue = "bbook"
        fx_conversion = "bid_ask"

        [plugins.bbook]

        [plugins.margin]
        min_margin_level = 50

        [plugins.replay]
        enabled = false
        """
    )
    code, out, err = run_cli(capsys, "config", "check", "--config", str(path))
    assert (code, out, err) == (0, f"{path}: ok (2 plugins enabled: bbook, margin)\n", "")


def test_config_check_prints_every_error_and_exits_2(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BK_TEST_MISSING_SECRET", raising=False)
    path = write_config(
        """
        colour = "blue"

        [kernel]
        fx_conversion = "ask"
        jwt_secret = "${BK_TEST_MISSING_SECRET}"

        [plugins.margin]
        max_lots = 5

        [plugins.replay]
        speed = "fast"

        [plugins.acme_fraud]
        """
    )
    code, out, err = run_cli(capsys, "config", "check", "--config", str(path))
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "configuration errors:",
        f"  - {path}: unknown top-level key 'colour' (expected [kernel] and [plugins.<name>])",
        f"  - {path}: [kernel] jwt_secret: environment variable ${{BK_TEST_MISSING_SECRET}} "
        "is not set",
        f"  - {path}: [kernel] fx_conversion: 'ask' is not one of ['mid', 'bid_ask']",
        f"  - {path}: [plugins.margin] max_lots: Additional properties are not allowed "
        "('max_lots' was unexpected)",
        f"  - {path}: [plugins.replay] speed: 'fast' is not valid under any of the given schemas",
        f"  - {path}: [plugins.acme_fraud]: plugin 'acme_fraud' is enabled but not installed "
        "(no entry point 'acme_fraud' in group brokerkernel.plugins)",
    ]


def test_config_check_reports_a_toml_syntax_error(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config("[plugins.bbook\n")
    code, out, err = run_cli(capsys, "config", "check", "--config", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "configuration errors:",
        f"  - {path}: invalid TOML: Expected ']' at the end of a table declaration "
        "(at line 1, column 15)",
    ]


def test_config_check_uses_the_process_environment(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BK_TEST_VENUE", "bbook")
    path = write_config('[kernel]\nexecution_venue = "${BK_TEST_VENUE}"\n[plugins.bbook]\n')
    code, out, _ = run_cli(capsys, "config", "check", "--config", str(path))
    assert (code, out) == (0, f"{path}: ok (1 plugins enabled: bbook)\n")


def test_config_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["config"])
    assert exited.value.code == 2
    assert "usage: brokerkernel config" in capsys.readouterr().err


# ------------------------------------------------------------------ plugins


@pytest.mark.usefixtures("third_party_installed")
def test_plugins_lists_installed_plugins_with_state_distribution_version_and_schema(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        """
        [plugins.acme_risk]
        api_key = "never-printed"

        [plugins.margin]

        [plugins.replay]
        enabled = false
        """
    )
    code, out, err = run_cli(capsys, "plugins", "--config", str(path))
    assert (code, err) == (0, "")
    assert "never-printed" not in out

    blocks: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("    "):
            blocks[current].append(line)
        else:
            current = line.split()[0]
            blocks[current] = [line]
    installed = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert list(blocks) == sorted(installed)
    assert {"acme_risk", "broken", "bbook", "margin", "replay", "spread_markup"} <= installed

    acme_header, acme_schema_line = blocks["acme_risk"]
    assert acme_header == "acme_risk        enabled   acme-risk 0.1.0  (acme_risk)"
    assert acme_schema_line == "    config schema: " + json.dumps(ACME_SCHEMA, sort_keys=True)

    assert blocks["margin"] == [
        "margin           enabled   brokerkernel 0.1.0  (brokerkernel.rules.margin)",
        "    config schema: " + json.dumps(MARGIN_SCHEMA, sort_keys=True),
    ]
    assert blocks["bbook"][0] == (
        "bbook            disabled  brokerkernel 0.1.0  (brokerkernel.plugins.bbook)"
    )
    assert blocks["replay"][0] == (
        "replay           disabled  brokerkernel 0.1.0  (brokerkernel.plugins.replay)"
    )
    replay_schema = json.loads(blocks["replay"][1].removeprefix("    config schema: "))
    assert replay_schema["additionalProperties"] is False
    assert replay_schema["properties"]["speed"]["default"] == 1
    assert blocks["broken"] == [
        "broken           disabled  acme-broken 2.3.4  (acme_broken_plugin)",
        "    import error: ImportError: acme_vendor_sdk is required",
    ]


def test_plugins_without_a_config_file_lists_everything_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "plugins", "--config", str(tmp_path / "absent.toml"))
    assert code == 0
    headers = [line for line in out.splitlines() if not line.startswith("    ")]
    spread_markup = "spread_markup    disabled  brokerkernel 0.1.0"
    assert f"{spread_markup}  (brokerkernel.plugins.spread_markup)" in headers
    assert all(line.split()[1] == "disabled" for line in headers)


# ------------------------------------------------------------------ console script


INFO_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ")


def without_info_logs(stderr: str) -> str:
    """``stderr`` without the INFO log lines ``main``'s logging setup lets through.

    (Importing alembic logs "setup plugin ..." at INFO.) Warnings and errors stay.
    """
    return "".join(
        line for line in stderr.splitlines(keepends=True) if not INFO_LOG_LINE.match(line)
    )


def run_console_script(*argv: str) -> subprocess.CompletedProcess[str]:
    """The installed ``brokerkernel`` script, run from the repository root."""
    assert CONSOLE_SCRIPT.is_file(), f"console script not installed at {CONSOLE_SCRIPT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(CONSOLE_SCRIPT), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_config_check_on_the_repository_plugins_toml() -> None:
    result = run_console_script("config", "check")
    enabled = repo_enabled_plugins()
    assert (result.returncode, without_info_logs(result.stderr)) == (0, "")
    assert result.stdout == (
        f"plugins.toml: ok ({len(enabled)} plugins enabled: {', '.join(enabled)})\n"
    )


def test_console_script_plugins_lists_the_first_party_plugins() -> None:
    result = run_console_script("plugins")
    assert (result.returncode, without_info_logs(result.stderr)) == (0, "")
    headers = {
        line.split()[0]: line for line in result.stdout.splitlines() if not line.startswith("    ")
    }
    enabled = set(repo_enabled_plugins())
    for name, target in (
        ("bbook", "brokerkernel.plugins.bbook"),
        ("margin", "brokerkernel.rules.margin"),
        ("replay", "brokerkernel.plugins.replay"),
        ("spread_markup", "brokerkernel.plugins.spread_markup"),
    ):
        state = "enabled" if name in enabled else "disabled"
        assert headers[name] == f"{name:<16} {state:<9} brokerkernel 0.1.0  ({target})"


def test_console_script_config_check_exits_2_on_a_bad_file(write_config: WriteConfig) -> None:
    path = write_config('[kernel]\nclock = 5\n\n[plugins.bbook]\nenabled = "yes"\n')
    result = run_console_script("config", "check", "--config", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert without_info_logs(result.stderr).splitlines() == [
        "configuration errors:",
        f"  - {path}: [plugins.bbook] enabled: must be true or false",
        f"  - {path}: [kernel] clock: 5 is not of type 'string'",
    ]
