"""The README tells the truth: its zoo table matches models.yaml, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.manifest import load_manifest
from zoo.release import with_zoo_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")
def test_zoo_table_is_generated_from_models_yaml():
    text = README.read_text(encoding="utf-8")
    expected = with_zoo_table(text, load_manifest(ROOT / "models.yaml"))
    assert text == expected, "README zoo table is stale: run `zoo build` or regenerate it"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = README.read_text(encoding="utf-8").split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_zoo_command_in_the_readme_exists():
    text = README.read_text(encoding="utf-8")
    used = set(re.findall(r"^zoo ([a-z]+)", text, flags=re.MULTILINE))
    assert used, "the README shows no zoo command"
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    registered |= {g.name for g in app.registered_groups}  # zoo import ..., zoo export ...
    assert used <= registered, f"README names commands that do not exist: {used - registered}"
    for command in sorted(used):
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0


def test_every_option_the_readme_gives_a_zoo_command_exists():
    """Each ``--option`` on a README line that runs ``zoo CMD`` is an option of CMD."""
    import typer.main

    commands = typer.main.get_command(app).commands
    checked = 0
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(?:\d+\.\s+)?zoo (?:-v )?([a-z]+)\b(.*)", line)
        if not match or match.group(1) not in commands:
            continue
        usage = match.group(2).split("#")[0]
        command = commands[match.group(1)]
        if hasattr(command, "commands"):  # zoo import FORMAT ...: the subcommand's options
            name, _, usage = usage.strip().partition(" ")
            command = command.commands[name]
        options = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage):
            assert option in options, f"README: `zoo {match.group(1)}` has no {option}: {line.strip()}"
            checked += 1
    assert checked > 20, f"only {checked} options checked: the README lost its examples?"


def test_every_http_endpoint_in_the_readme_is_served():
    """The endpoints the README's curl examples call are APIs of the service."""
    from zoo.service.app import CellZoo

    text = README.read_text(encoding="utf-8")
    used = set(re.findall(r"localhost:3000/([a-z]+)", text))
    builtin = {"readyz", "livez", "metrics", "docs"}
    mounted = {route.path.strip("/").split("/")[0]  # the web page and its helpers
               for app, _, _ in CellZoo.mount_apps for route in getattr(app, "routes", [])}
    assert {"segment", "route", "models", "ui"} <= used
    served = set(CellZoo.apis) | mounted
    assert used - builtin <= served, used - builtin - served
