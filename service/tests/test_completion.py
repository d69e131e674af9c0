"""`jobqueue completion`: the scripts, driven in real shells, complete what the parser has."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from jobqueue.client import cli

BASH = shutil.which("bash") or "/bin/bash"

# Fills COMP_WORDS as readline would for the line (up to the cursor) in $1, calls the
# function `complete -p jobqueue` names, and prints COMPREPLY, one per line.
DRIVER = r"""
source "$SCRIPT"
spec=$(complete -p jobqueue) || exit 9
fn=${spec##*-F }; fn=${fn%% *}
COMP_LINE=$1; COMP_POINT=${#1}
read -ra COMP_WORDS <<<"${1//=/ = }"
[[ $1 == *[\ =] ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
"$fn" jobqueue "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


@pytest.fixture
def bash_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    script = tmp_path / "jobqueue.bash"
    script.write_text(_script("bash", capsys))
    (tmp_path / "cwd" / "outdir").mkdir(parents=True)
    (tmp_path / "cwd" / "fit.py").write_text("")

    def complete(line: str) -> list[str]:
        # An empty PATH: the script uses bash's builtins alone.
        result = subprocess.run([BASH, "--norc", "--noprofile", "-c", DRIVER, "driver", line],
                                capture_output=True, text=True, timeout=30,
                                cwd=tmp_path / "cwd", env={"SCRIPT": str(script), "PATH": ""})
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return [w for w in result.stdout.split("\n") if w]

    return complete


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in cli.build_parser()._actions
              if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_bash_completes_a_command(bash_complete) -> None:
    assert bash_complete("jobqueue su") == ["submit"]
    assert bash_complete("jobqueue --json l") == ["list", "log", "login"]


def test_bash_offers_every_command_of_the_parser(bash_complete) -> None:
    assert bash_complete("jobqueue ") == list(_commands())
    assert {"submit", "completion", "dev"} <= set(_commands())


def test_bash_completes_the_states(bash_complete) -> None:
    assert bash_complete("jobqueue list --state ") == list(cli.STATES)
    assert bash_complete("jobqueue list --state=") == list(cli.STATES)
    assert bash_complete("jobqueue --json list --all --state r") == ["running"]
    assert bash_complete("jobqueue cancel a1 --state ") == ["queued", "running"]
    assert set(bash_complete("jobqueue delete --state ")) == {
        "succeeded", "failed", "cancelled", "timed_out", "lost"}


def test_bash_offers_each_commands_own_options(bash_complete) -> None:
    for name, parser in _commands().items():
        assert set(bash_complete(f"jobqueue {name} -")) == _flags(parser), name
    assert bash_complete("jobqueue fetch --no") == ["--no-inputs"]


def test_bash_completes_paths_where_they_belong(bash_complete) -> None:
    assert sorted(bash_complete("jobqueue submit ")) == ["fit.py", "outdir"]
    assert bash_complete("jobqueue submit --cpus ") == []  # a number: nothing to offer
    assert bash_complete("jobqueue submit --name x f") == ["fit.py"]
    # After "--" the words are the script's: files, even those that look like options.
    assert sorted(bash_complete("jobqueue submit fit.py -- --cpus ")) == ["fit.py", "outdir"]
    assert bash_complete("jobqueue fetch a1 -o ") == ["outdir"]
    assert bash_complete("jobqueue status ") == []  # job IDs: not known here
    assert bash_complete("jobqueue completion ") == ["bash", "zsh", "fish"]
    assert bash_complete("jobqueue completion bash ") == []


def test_every_command_and_option_is_in_every_script(capsys) -> None:
    for shell in ("zsh", "fish"):
        script = _script(shell, capsys)
        for name, parser in _commands().items():
            assert f"{name}:" in script if shell == "zsh" else f"-a {name} " in script
            for flag in _flags(parser):
                form = (flag if shell == "zsh" else
                        f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
                assert form in script, (shell, name, flag)


def test_an_unknown_shell_is_a_usage_error(capsys) -> None:
    assert cli.main(["completion", "tcsh"]) == cli.EXIT_USAGE
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_the_zsh_script_parses(capsys) -> None:
    result = subprocess.run(["zsh", "-n"], input=_script("zsh", capsys), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_fish_completes_with_the_script(tmp_path: Path, capsys) -> None:
    script = tmp_path / "jobqueue.fish"
    script.write_text(_script("fish", capsys))

    def complete(line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C $L"],
                                capture_output=True, text=True, timeout=30,
                                env={"L": line, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        return [w.split("\t")[0] for w in result.stdout.splitlines()]

    assert complete("jobqueue su") == ["submit"]
    assert sorted(complete("jobqueue list --state ")) == sorted(cli.STATES)
    assert sorted(complete("jobqueue ")) == sorted(_commands())
