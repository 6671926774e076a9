"""`adapt demo` refuses a wrong flag before the imports that take seconds (tens on a busy machine): Gradio always,
torch too for every flag that can be checked without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# adapt's own entry point as the console script runs it (argv from sys.argv), then what it had imported
_RUN = """\
import json, sys
from adapt.cli import main
sys.argv = ["adapt", "demo", *json.loads(sys.argv[1])]
try:
    code = main()
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "gradio": "gradio" in sys.modules, "torch": "torch" in sys.modules}))
"""


def run_demo_flags(flags: list[str], tmp_path: Path) -> tuple[dict, str]:
    """`adapt demo FLAGS` in a fresh interpreter: ``({"code", "gradio", "torch"}, stderr)``."""
    env = {k: v for k, v in os.environ.items() if k != "POCKET_ADAPT_DEMO_PASSWORD"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", _RUN, json.dumps(flags)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(("flags", "said"), [
    (["--port", "70000"], "adapt demo: error: --port must be in 1..65535 (a whole number), got 70000"),
    (["--port", "-1"], "adapt demo: error: --port must be in 1..65535 (a whole number), got -1"),
    (["--domain", "no_such_domain"], "adapt demo: error: unknown domain 'no_such_domain'; known domains:"),
    (["--domain", "medical"], "adapt demo: error: no medical model: runs/quickstart-medical/train/final"),
    (["--host", "no-such-host.invalid"], "adapt demo: error: --host no-such-host.invalid: not a host name"),
    (["--auth-file", "missing-users.txt"], "adapt demo: error: missing-users.txt: cannot read the auth file"),
    (["--auth-user", "ann"], "adapt demo: error: --auth-user ann: set the password in the environment variable"),
    (["--max-upload-mb", "nan"], "adapt demo: error: --max-upload-mb must be a positive number of MB, got nan"),
    # the sampling flags' parsing imported torch (model.arguments took model.generation's checks)
    (["--top-p", "0.5"], "adapt demo: error: --top-p and --seed shape sampled answers"),
    (["--seed", "7"], "adapt demo: error: --top-p and --seed shape sampled answers"),
])
def test_a_wrong_flag_is_refused_before_gradio_or_torch_is_imported(flags, said, tmp_path):
    """They were checked after Gradio's and torch's imports: ~30 s on busy cores to refuse --port 70000."""
    seen, err = run_demo_flags(flags, tmp_path)
    assert seen["code"] == 1 and not seen["gradio"], err
    assert not seen["torch"], err
    assert said in err and "Traceback" not in err and "loading" not in err, err


@pytest.mark.parametrize(("flags", "said"), [
    (["--temperature", "1e-9"], "argument --temperature: must be 0 (greedy) or at least 0.001, got 1e-09"),
    (["--top-p", "0"], "argument --top-p: must be above 0 and at most 1 (1 = the whole softmax), got 0"),
    (["--seed", "-1"], "argument --seed: must be 0 to 4294967295, got -1"),
    (["--seed", "x"], "argument --seed: 'x' is not a whole number"),
])
def test_a_sampling_value_out_of_range_is_a_usage_error_without_torch(flags, said, tmp_path):
    """The sampling flags' argparse types check with `model.limits`, not with torch-importing `model.generation`."""
    seen, err = run_demo_flags(flags, tmp_path)
    assert seen["code"] == 2 and not seen["gradio"] and not seen["torch"], err
    assert said in err and "Traceback" not in err, err


def demo_args(*flags: str):
    """The parsed ``adapt demo FLAGS``."""
    import argparse

    from deploy.demo.cli import add_demo_parser

    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["demo", *flags])


def test_an_empty_auth_user_is_refused_not_served_without_a_login(monkeypatch):
    """`--auth-user ""` (an unset variable: `--auth-user "$DEMO_USER"`) was read as no --auth-user: the demo served
    everyone, without a login and without a word."""
    from deploy.demo import cli
    from deploy.demo.cli import PASSWORD_ENV, check_flags
    from deploy.demo.page import DemoError

    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    monkeypatch.setattr(cli, "check_address", lambda host, port: None)  # whether 7860 is free is not the point
    with pytest.raises(DemoError, match="--auth-user needs a user name"):
        check_flags(demo_args("--auth-user", "", "--model", "pocket-tiny"))
    assert check_flags(demo_args("--auth-user", "ann", "--model", "pocket-tiny")) == (
        "pocket-tiny", ("ann", "s3cret"))


def test_the_auth_user_name_is_trimmed_as_auth_file_names_are(monkeypatch, tmp_path):
    """`--auth-user " ann"` asked for a login as " ann" (a login typed as "ann" failed), while " ann:pw" in an auth file
    is the user "ann"; a name of only spaces served behind a login nobody could type."""
    from deploy.demo import cli
    from deploy.demo.cli import PASSWORD_ENV, check_flags
    from deploy.demo.page import DemoError

    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    monkeypatch.setattr(cli, "check_address", lambda host, port: None)
    users = tmp_path / "users.txt"
    users.write_text(" ann :s3cret\n", encoding="utf-8")
    users.chmod(0o600)
    from_file = check_flags(demo_args("--auth-file", str(users), "--model", "pocket-tiny"))[1]
    assert from_file == [("ann", "s3cret")]
    assert check_flags(demo_args("--auth-user", " ann\t", "--model", "pocket-tiny"))[1] == from_file[0]
    with pytest.raises(DemoError, match="--auth-user needs a user name"):
        check_flags(demo_args("--auth-user", "  ", "--model", "pocket-tiny"))


@pytest.mark.parametrize("flag", ["--model", "--domain", "--device", "--host"])
def test_an_empty_model_domain_or_device_is_refused_not_taken_for_the_default(flag, monkeypatch):
    """`--model ""` served pocket-tiny and `--domain ""` the general panel, silently; `--device ""` failed only
    after "loading ..." was printed; `--host ""` was "not a host name" ("--host : ...")."""
    from deploy.demo import cli
    from deploy.demo.page import DemoError

    monkeypatch.setattr(cli, "check_address", lambda host, port: None)
    with pytest.raises(DemoError, match=f"^{flag} is empty; give a value or leave the flag out for the default$"):
        cli.check_flags(demo_args(flag, ""))


def test_a_model_the_demo_cannot_load_is_refused_before_gradio_is_imported(tmp_path):
    """A missing --model folder was found only when the model loaded, after Gradio's import."""
    seen, err = run_demo_flags(["--model", "no-such-folder"], tmp_path)
    assert seen["code"] == 1 and not seen["gradio"], err
    assert "adapt demo: error: no-such-folder: not a checkpoint directory nor a preset" in err and "loading" not in err


@pytest.mark.parametrize(("telltale", "runtime"), [("vision.onnx", "onnx"), ("model.pte", "executorch"),
                                                    ("m-f16.gguf", "llamacpp")])
def test_an_export_folder_is_refused_naming_what_the_demo_serves_and_the_verb_that_runs_it(telltale, runtime,
                                                                                          tmp_path):
    """`adapt demo --model EXPORT` said "run it with --runtime onnx", a flag the demo does not have."""
    from deploy.demo.cli import check_model
    from deploy.demo.page import DemoError

    export = tmp_path / "export"
    export.mkdir()
    (export / telltale).write_bytes(b"")
    with pytest.raises(DemoError) as err:
        check_model(str(export))
    said = str(err.value)
    assert "the demo serves PyTorch models only" in said and "`adapt export --format hf`" in said
    assert f"`adapt chat --model {export} --runtime {runtime} --image IMAGE`" in said
    assert "run it with --runtime" not in said


def test_the_model_check_passes_a_preset_and_a_checkpoint_folder(native_dir, tmp_path):
    from deploy.demo.cli import check_model

    check_model("pocket-tiny")
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "config.json").write_bytes((native_dir / "config.json").read_bytes())  # all the check reads
    (folder / "stray.onnx").write_bytes(b"")  # with a config.json it is a checkpoint, whatever lies beside it
    check_model(str(folder))


def _ipv6_loopback_port() -> int:
    """A free port on ::1, or skip where this machine has no IPv6 loopback."""
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            return probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")


@pytest.mark.parametrize("host", ["[::1]", "::1", " ::1 "])
def test_an_ipv6_host_in_brackets_or_bare_is_served_as_gradio_takes_it(host, monkeypatch):
    """`--host [::1]` was "not a host name or address this machine can resolve", though the loopback check reads
    it as this machine; `--host ::1` passed, and Gradio's check of ``http://::1:PORT/`` failed once the model had
    loaded; `--host " ::1 "` was refused though launch_demo strips it. All are checked as ::1 and reach Gradio as
    [::1] (it binds the address inside the brackets), through launch_demo's own host handling."""
    from deploy.demo import app, cli
    from deploy.demo.checks import gradio_host

    port = _ipv6_loopback_port()
    cli.check_flags(demo_args("--host", host, "--port", str(port), "--model", "pocket-tiny"))
    assert gradio_host("127.0.0.1") == "127.0.0.1" and gradio_host("localhost") == "localhost"
    served = {}

    class Blocks:  # what build_demo returns, as far as launch_demo touches it
        def queue(self, **kwargs):
            return self

        def launch(self, server_name, **kwargs):
            served["host"] = server_name
            raise SystemExit(0)

    monkeypatch.setattr(app, "build_demo", lambda *a, **k: Blocks())
    monkeypatch.setattr(app, "sweep_stale", lambda: [])
    monkeypatch.setattr(app, "install_signal_cleanup", lambda: None)
    with pytest.raises(SystemExit):
        cli.run_demo(demo_args("--host", host, "--port", str(port), "--model", "pocket-tiny"))
    assert served["host"] == "[::1]"
