"""The README's examples of the offline commands are the CLI's real output.

Every fenced block of README.md whose commands all run without a server (`check`, `explain`,
`token` and usage mistakes, plus `echo ... > file`) is run in a scratch directory that sees the
repository's `istio/`, and each command's output must be the text the README shows under it.
Examples that need Prometheus (`status`, `rollout` with `--prometheus`) come from the e2e runs.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI_DIR = ROOT / "target" / "debug"
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def runnable(command: str) -> bool:
    if command.startswith("echo "):
        return True
    return command.startswith("canary-split ") and "--prometheus " not in command


def examples() -> list[list[tuple[str, str]]]:
    """Each block as (command, the output shown under it); `\\`-continued lines joined."""
    blocks = []
    for body in FENCE.findall((ROOT / "README.md").read_text()):
        if not body.startswith("$ "):
            continue
        steps: list[tuple[str, str]] = []
        lines = body.splitlines()
        index = 0
        while index < len(lines):
            command = lines[index].removeprefix("$ ")
            while command.endswith("\\"):
                index += 1
                command = command[:-1] + lines[index].strip()
            index += 1
            output = []
            while index < len(lines) and not lines[index].startswith("$ "):
                output.append(lines[index])
                index += 1
            steps.append((command, "".join(line + "\n" for line in output)))
        if all(runnable(command) for command, _ in steps):
            blocks.append(steps)
    return blocks


EXAMPLES = examples()


def test_the_readme_has_offline_examples():
    commands = [command.split()[1] for steps in EXAMPLES for command, _ in steps if command.startswith("canary-split")]
    assert {"check", "explain", "token", "status"} <= set(commands), commands


@pytest.mark.parametrize("steps", EXAMPLES, ids=[steps[0][0][:60] for steps in EXAMPLES])
def test_a_readme_example_is_the_clis_real_output(steps, tmp_path):
    (tmp_path / "istio").symlink_to(ROOT / "istio")
    env = {key: value for key, value in os.environ.items() if key != "CANARY_SPLIT_PIN_KEYS"}
    env["PATH"] = f"{CLI_DIR}:{env['PATH']}"
    for command, shown in steps:
        # A comment after the command says where its input comes from; the shell drops it.
        # Both streams in one pipe, in the order written, as a terminal shows them.
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert result.stdout == shown, command
