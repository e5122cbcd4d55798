"""Settings are defined once: each with a parser and a doc, docs/settings.md generated from them."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from pathlib import Path

import pytest

from services.core import settings as settings_module
from services.core.mediatypes import DEFAULT_ALLOWED_EXTENSIONS
from services.core.settings import (
    KNOWN_VARIABLES,
    OTHER_PREFIXES,
    SPECS,
    Settings,
    load_settings,
    markdown,
    setting,
    specs,
    unknown_variables,
)

ROOT = Path(__file__).resolve().parent.parent


def test_docs_settings_md_is_generated_from_the_definitions() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == markdown(), (
        "docs/settings.md is stale: run `make docs` (python -m services.core.settings --markdown > docs/settings.md)"
    )


def test_the_command_prints_the_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    settings_module.main(["--markdown"])
    assert capsys.readouterr().out == markdown()


def test_every_setting_has_a_variable_a_doc_and_a_parser() -> None:
    assert [spec.name for spec in SPECS] == [f.name for f in dataclasses.fields(Settings)]
    for spec in SPECS:
        assert spec.variable == f"ATTACHD_{spec.name.upper()}"
        assert spec.doc and "\n" not in spec.doc
        assert callable(spec.parse)
        assert f"| `{spec.variable}` |" in markdown()


def test_a_setting_without_a_doc_or_a_parser_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Bare:
        limit: int = 3

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        limit: int = setting(3, " ")

    @dataclasses.dataclass(frozen=True)
    class Unparsed:
        ratio: complex = setting(1j, "a ratio")

    @dataclasses.dataclass(frozen=True)
    class Parsed:
        ratio: complex = setting(1j, "a ratio", parse=complex)
        name: str | None = setting(None, "a name")

    for cls in (Bare, Undocumented, Unparsed):
        with pytest.raises(TypeError):
            specs(cls)
    ratio, name = specs(Parsed)
    assert (ratio.parse("2j"), ratio.type_name) == (2j, "complex")
    assert (name.parse(""), name.parse("x"), name.type_name) == (None, "x", "string")


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.variable)
def test_each_default_is_shown_as_it_would_be_written(spec: settings_module.Spec) -> None:
    assert spec.parse(settings_module._shown(spec.default)) == spec.default


def test_load_settings_parses_each_type() -> None:
    loaded = load_settings(
        {
            "ATTACHD_PORT": "9000",
            "ATTACHD_SYNC_WAIT_S": "1.5",
            "ATTACHD_PUBLIC_URL": "https://files.example.com",
            "ATTACHD_ALLOWED_EXTENSIONS": " .PDF, txt ,,",
            "ATTACHD_NO_NESTING_TYPES": "Ticket , Task",
            "ATTACHD_FETCH_ALLOW_CIDRS": "10.0.0.0/8, fd00::/8",
            "ATTACHD_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    assert loaded.port == 9000
    assert loaded.sync_wait_s == 1.5
    assert loaded.public_url == "https://files.example.com"
    assert loaded.allowed_extensions == frozenset({"pdf", "txt"})
    assert loaded.no_nesting_types == frozenset({"Ticket", "Task"})
    assert loaded.fetch_allow_cidrs == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert loaded.s3_endpoint_url == "http://127.0.0.1:9000"
    assert load_settings({"ATTACHD_S3_ENDPOINT_URL": ""}).s3_endpoint_url is None


def test_load_settings_defaults_and_overrides() -> None:
    assert load_settings({}) == Settings()
    assert Settings().allowed_extensions == DEFAULT_ALLOWED_EXTENSIONS
    assert load_settings({"ATTACHD_PORT": "9000"}, port=9001).port == 9001


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ATTACHD_PORT", "eighty"), ("ATTACHD_SYNC_WAIT_S", "soon"), ("ATTACHD_FETCH_ALLOW_CIDRS", "10.0.0.0/33")],
)
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}: "):
        load_settings({variable: value})


def test_the_link_secret_is_derived_from_the_jwt_secret_unless_set() -> None:
    derived = Settings(jwt_secret="jwt").link_secret
    assert derived != b"jwt" and len(derived) == 32
    assert Settings(jwt_secret="jwt", signing_secret="links").link_secret == b"links"
    with pytest.raises(RuntimeError, match="ATTACHD_SIGNING_SECRET or ATTACHD_JWT_SECRET"):
        _ = Settings().link_secret


def test_an_unknown_variable_is_one_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "ATTACHD_MAX_FILE_BYTE": "5",
        "ATTACHD_ZZZ": "1",
        "ATTACHD_MAX_FILE_BYTES": "6",
        "ATTACHD_LOG_LEVEL": "INFO",
        "ATTACHD_EVENT_LOOP": "asyncio",
        "ATTACHD_TOKEN": "t",
        "ATTACHD_TEST_DATABASE_URL": "postgresql://x",
        "ATTACHD_BENCH_DATABASE_URL": "postgresql://x",
        "HOME": "/root",
    }
    with caplog.at_level(logging.WARNING, logger="attachd.settings"):
        assert load_settings(environ).max_file_bytes == 6
    [record] = [r for r in caplog.records if r.name == "attachd.settings"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "ignoring unknown environment variables: "
        "ATTACHD_MAX_FILE_BYTE (did you mean ATTACHD_MAX_FILE_BYTES?), ATTACHD_ZZZ"
    )


def test_known_variables_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    environ = {spec.variable: settings_module._shown(spec.default) for spec in SPECS}
    with caplog.at_level(logging.WARNING, logger="attachd.settings"):
        load_settings({**environ, "ATTACHD_TOKEN": "t", "ATTACHD_TEST_REDIS_URL": "redis://x"})
    assert not [r for r in caplog.records if r.name == "attachd.settings"]
    assert unknown_variables({"ATTACHD_PORT": "1", "ATTACHD_PROT": "1"}) == ["ATTACHD_PROT"]


def test_every_attachd_variable_the_repository_names_is_known() -> None:
    """A variable read or documented anywhere is a setting, one of OTHER_VARIABLES or a test/bench one."""
    pattern = re.compile(r"ATTACHD_[A-Z0-9_]*[A-Z0-9]")
    named: dict[str, str] = {}
    for folder in ("services", "workers", "tests", "bench", "deploy", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".sh") or path.name == "test_settings.py":
                continue
            for name in pattern.findall(path.read_text(errors="replace")):
                named.setdefault(name, str(path.relative_to(ROOT)))
    for path in (ROOT / "README.md", ROOT / "Makefile"):
        for name in pattern.findall(path.read_text()):
            named.setdefault(name, path.name)
    unknown = {
        name: where
        for name, where in named.items()
        if name not in KNOWN_VARIABLES and not f"{name}_".startswith(OTHER_PREFIXES)
    }
    assert not unknown, "add these to Settings (setting(...)) or to OTHER_VARIABLES"
