"""One vocabulary: every layer's allowed values and shared defaults come from ``BackSplitLib.vocabulary``."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest
import typer

from BackSplitLib import vocabulary as v

REPO = Path(__file__).resolve().parents[2]


def _option(command_name: str, option: str, group: str | None = None):
    app_module = importlib.import_module("BackSplitLib.cli.app")

    app_module._load_commands()
    root = typer.main.get_command(app_module.app)
    command = root.commands[command_name] if group is None else root.commands[group].commands[command_name]
    (param,) = [p for p in command.params if option in p.opts]
    return param


def test_members_print_as_their_value_everywhere():
    member = v.TrainingMode.binary
    assert (str(member), f"{member}", "{}".format(member), json.dumps(member)) == ("binary",) * 3 + ('"binary"',)
    assert member == "binary"


def test_terminal_states_are_job_states_and_plain_strings():
    assert set(v.TERMINAL_STATES) | set(v.ACTIVE_STATES) == set(v.JOB_STATES)
    assert all(type(state) is str for state in v.TERMINAL_STATES + v.ACTIVE_STATES)


@pytest.mark.parametrize(("command", "option", "group", "vocabulary"), [
    ("train", "--mode", None, v.TrainingMode),
    ("train", "--arch", None, v.Architecture),
    ("train", "--partial", None, v.PartialLabelMode),
    ("finetune", "--mode", None, v.TrainingMode),
    ("finetune", "--partial", None, v.PartialLabelMode),
    ("train", "--mode", "remote", v.TrainingMode),
    ("finetune", "--mode", "remote", v.TrainingMode),
])
def test_cli_choices_come_from_the_vocabulary(command, option, group, vocabulary):
    assert _option(command, option, group).type_descriptor.annotation is vocabulary


def test_cli_refuses_a_value_outside_the_vocabulary(capsys):
    from BackSplitLib.cli import main

    assert main(["train", "--mode", "nonsense", "--out", "unused", "unused"]) == 2
    err = capsys.readouterr().err
    assert all(f"'{mode}'" in err for mode in v.TRAINING_MODES), err


def test_server_schema_and_defaults_come_from_the_vocabulary():
    from BackSplitLib.server.routes.jobs import Job, JobRequest

    fields = JobRequest.model_fields
    assert fields["mode"].default == v.DEFAULT_TRAINING_MODE
    assert fields["iterations"].default is None  # filled per kind by vocabulary.default_iterations
    assert (v.default_iterations("train"), v.default_iterations("finetune")) == \
        (v.DEFAULT_ITERATIONS, v.DEFAULT_FINETUNE_ITERATIONS)
    assert fields["arch"].default == v.DEFAULT_ARCHITECTURE
    request = JobRequest.model_validate({"kind": "finetune", "mode": "binary", "partial": "naive"})
    assert (type(request.mode), type(request.partial), type(request.kind)) == (str, str, str)
    for field, values in (("mode", v.TRAINING_MODES), ("partial", v.PARTIAL_LABEL_MODES), ("kind", v.JOB_KINDS)):
        with pytest.raises(ValueError, match=" or ".join(f"'{x}'" for x in values)):
            JobRequest.model_validate({"kind": "train", field: "nonsense"})
    assert Job.model_fields["state"].annotation is v.JobState


def test_engine_checks_and_clients_share_the_same_tuples():
    from BackSplitLib import client, losses, networks, training
    from BackSplitLib.server import store

    assert training.MODES is v.TRAINING_MODES
    assert training.PARTIAL_MODES is losses.PARTIAL_MODES is v.PARTIAL_LABEL_MODES
    assert networks.ARCHITECTURES is v.ARCHITECTURES
    assert client.TERMINAL_STATES is store.TERMINAL_STATES is v.TERMINAL_STATES
    assert client.DEFAULT_SERVER == v.DEFAULT_SERVER_URL == f"http://127.0.0.1:{v.DEFAULT_PORT}"


def test_serve_defaults_to_the_shared_port():
    assert _option("serve", "--port").default == v.DEFAULT_PORT == 8765


def _python39() -> str | None:
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9")):
        return str(candidate)
    return None


@pytest.mark.skipif(_python39() is None, reason="no Python 3.9 interpreter (pyenv) on this machine")
def test_vocabulary_and_client_import_on_python_39():
    """What Slicer 5.8 (Python 3.9) imports: the vocabulary and the standard-library client."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import BackSplitLib.client as c, BackSplitLib.vocabulary as v;"
            "print(f'{v.TrainingMode.binary}', c.TERMINAL_STATES[0])")
    out = subprocess.run([_python39(), "-I", "-c", code, str(REPO)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["binary", "succeeded"]
