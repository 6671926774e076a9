"""The ``adapt demo`` verb: ``add_demo_parser(verbs)`` adds it to a subparsers object, ``run_demo(args)`` runs it.

Imports nothing heavy until the verb runs, so building the ``adapt`` parser stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from deploy.demo.checks import PASSWORD_ENV
from model.arguments import blank_flag, positive_int, sampling_seed, sampling_temperature, sampling_top_p
from model.errors import user_error_message

__all__ = ["GENERAL_MODEL", "QUICKSTART_FIELDS", "add_demo_parser", "check_flags", "default_model", "main",
           "quickstart_model", "run_demo"]

DEFAULT_MAX_NEW_TOKENS = 128  # kept equal to deploy.demo.session.DEFAULT_MAX_NEW_TOKENS (tested)
GENERAL_MODEL = "pocket-tiny"  # pre-trained on the synthetic general world: the model for plain images
# domain -> the `adapt quickstart --field` that adapts pocket-tiny to it
QUICKSTART_FIELDS = {"medical": "medical", "driving": "driving", "remote_sensing": "remote_sensing"}
_MINUTES = {"medical": "about a minute", "remote_sensing": "about a minute", "driving": "about 7 minutes"}


def quickstart_model(field: str, cwd: str | Path | None = None) -> Path:
    """Where ``adapt quickstart --field FIELD`` (run in `cwd`) leaves its adapted model."""
    return Path(cwd or ".") / f"runs/quickstart-{field}" / "train" / "final"


def default_model(domain: str | None, cwd: str | Path | None = None) -> str:
    """The model ``adapt demo`` serves when ``--model`` is not given: the domain's quick-start model when it
    exists, pocket-tiny for plain images; otherwise a DemoError saying how to make one. An untrained model
    is never picked silently: its answers are noise ("squaresquaresquare…")."""
    from deploy.demo.page import DemoError

    name = (domain or "general").strip()
    field = QUICKSTART_FIELDS.get(name)
    if field is None:
        return GENERAL_MODEL
    final = quickstart_model(field, cwd)
    if (final / "config.json").is_file():
        return str(final)
    shown = final if cwd is None else final.relative_to(Path(cwd))
    raise DemoError(
        f"no {name.replace('_', ' ')} model: {shown} does not exist. Make one with "
        f"`adapt quickstart --field {field}` ({_MINUTES[field]} on a CPU, synthetic data) and run this again, "
        f"or name a trained checkpoint with --model FOLDER (--model {GENERAL_MODEL} serves the untrained base "
        "model, whose answers are noise)")


def add_demo_parser(verbs) -> argparse.ArgumentParser:
    """Add the ``demo`` verb to `verbs` (the object ``add_subparsers`` returned); returns its parser."""
    demo = verbs.add_parser(
        "demo", help="try a model in the browser: upload images (DICOM, rasters, ...), ask, see boxes",
        description="Serve a local web demo of a model with a domain panel. Binds 127.0.0.1 unless --host "
                    f"says otherwise. Login: --auth-user NAME with the password in ${PASSWORD_ENV}, or "
                    "--auth-file with user:password lines; passwords are never taken on the command line.")
    demo.add_argument("--model", "-m", default=None,
                      help="preset name or checkpoint directory (default: the domain's quick-start model "
                           "runs/quickstart-<domain>/train/final; pocket-tiny without a domain)")
    demo.add_argument("--domain", "-d", default=None,
                      help="domain panel: medical, remote_sensing, ... (default: general images)")
    demo.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load in this dtype")
    demo.add_argument("--device", help="torch device, e.g. cpu or cuda")
    demo.add_argument("--allow-pickle", action="store_true",
                      help="read .bin weights with torch.load(weights_only=True)")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to bind (default 127.0.0.1; anything else is reachable from the network)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--share", nargs=0, action=_RefuseShare, help=argparse.SUPPRESS)  # Gradio's flag, said no to
    login = demo.add_mutually_exclusive_group()
    login.add_argument("--auth-user", metavar="NAME", help=f"require a login as NAME, password from ${PASSWORD_ENV}")
    login.add_argument("--auth-file", type=Path, metavar="FILE", help="require a login; FILE holds user:password lines")
    demo.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload accepted (default 200)")
    demo.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                      help=f"longest answer in tokens (default {DEFAULT_MAX_NEW_TOKENS}; a looping answer is cut "
                           "sooner)")
    demo.add_argument("--temperature", type=sampling_temperature, default=0.0,
                      help="0 = greedy answers (default), else answers sampled at this temperature, as `adapt chat "
                           "--temperature` samples (at least 0.001)")
    demo.add_argument("--top-p", type=sampling_top_p, default=1.0,
                      help="with --temperature: draw only from the likeliest tokens holding this share of the "
                           "probability, in (0, 1] (default 1: all of them)")
    demo.add_argument("--seed", type=sampling_seed, default=0,
                      help="with --temperature: random seed, set afresh for each question, so the same question about "
                           "the same images gets the same answer (default 0)")
    demo.set_defaults(handler=run_demo, precheck=check_flags, builds_model=True)
    return demo


class _RefuseShare(argparse.Action):
    """``--share`` (Gradio's public link) refused in words; argparse alone says only "unrecognized arguments"."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--share: the demo makes no public share links (they would route the page and its uploads "
                     "through Gradio's relay servers); to reach it from other machines use --host 0.0.0.0 with a "
                     "login (--auth-user or --auth-file)")


def check_flags(args: argparse.Namespace) -> tuple[str, list[tuple[str, str]] | tuple[str, str] | None]:
    """``(model to serve, login)``, or a DemoError for a flag that is wrong without importing Gradio or torch
    (seconds; tens on a busy machine): port, upload limit, login, sampling flags, domain (and its quick-start model),
    host. ``adapt``'s main runs it before those imports (the verb's ``precheck``); `run_demo` when it has not run."""
    if getattr(args, "checked", None) is not None:
        return args.checked
    from deploy.demo.checks import auth_from_env, check_domain, check_port, load_auth_file
    from deploy.demo.page import DemoError

    check_port(args.port, "--port")
    # given empty (`--model "$UNSET"`), they were taken as not given: the default model or panel, without a word
    blank = blank_flag(args, ("model", "domain", "device", "host"))
    if blank:
        raise DemoError(f"{blank} is empty; give a value or leave the flag out for the default")
    if not 0 < args.max_upload_mb < math.inf:  # nan and inf too: they failed after the model loaded, inf with a trace
        raise DemoError(f"--max-upload-mb must be a positive number of MB, got {args.max_upload_mb}")
    auth = None
    if args.auth_user is not None:  # an empty name (`--auth-user "$UNSET"`) served the demo with no login at all
        auth = auth_from_env(args.auth_user, PASSWORD_ENV)
    elif args.auth_file:
        auth = load_auth_file(args.auth_file)
    if not args.temperature and (args.top_p != 1.0 or args.seed):  # greedy answers draw nothing: they would not apply
        raise DemoError("--top-p and --seed shape sampled answers; give --temperature too (e.g. --temperature 0.7), "
                        "or leave them out for greedy answers")
    check_domain(args.domain)
    check_address(args.host.strip(), args.port)  # stripped, as launch_demo serves it
    args.checked = (args.model or default_model(args.domain), auth)
    return args.checked


def run_demo(args: argparse.Namespace) -> int:
    """Check the flags, load the model, build the page and serve it until interrupted."""
    model, auth = check_flags(args)
    if args.device is not None:
        from model.loading import check_device

        check_device(args.device)
    check_model(model)
    from deploy.demo.app import build_demo, launch_demo

    print(f"adapt demo: loading {model} ...", file=sys.stderr)
    blocks = build_demo(model, args.domain, dtype=args.dtype, device=args.device,
                        max_new_tokens=args.max_new_tokens, max_upload_mb=args.max_upload_mb,
                        allow_pickle=args.allow_pickle, temperature=args.temperature, top_p=args.top_p,
                        seed=args.seed)
    _, url, _ = launch_demo(blocks, host=args.host, port=args.port, auth=auth,
                            max_upload_mb=args.max_upload_mb, prevent_thread_lock=True, quiet=True)
    print(f"adapt demo: serving {args.domain or 'general'} on {url} (Ctrl+C to stop)"
          + (" with a login" if auth else ""), file=sys.stderr)
    serve_until_stopped(blocks)
    return 0


def check_model(model: str) -> None:
    """Refuse now, before Gradio is imported, a `model` the demo cannot load: an `adapt export` folder it cannot
    serve (a DemoError saying what it serves), a missing folder, a file, an unknown preset (the loader's error)."""
    from deploy.demo.page import DemoError
    from model.checkpoints.layouts import export_kind
    from model.loading import load_config

    export = None if (Path(model) / "config.json").is_file() else export_kind(Path(model))
    if export:
        what, runtime = export
        raise DemoError(f"--model {model}: {what} export; the demo serves PyTorch models only: a preset or a "
                        "checkpoint folder with config.json (a run's final/, or `adapt export --format hf` of one). "
                        f"Give the checkpoint it was exported from, or ask the export with `adapt chat --model {model} "
                        f"--runtime {runtime} --image IMAGE`")
    load_config(model)


def serve_until_stopped(blocks) -> None:
    """Wait while the launched demo serves, then close it. Not Gradio's ``block_thread``: it swallows Ctrl+C, which
    must end the demo as an interrupt (status 130), as it ends every verb."""
    try:
        while blocks.is_running:
            time.sleep(0.1)
    finally:
        blocks.close()


def check_address(host: str, port: int) -> None:
    """`DemoError` now, before the model loads, for a host this machine cannot serve on or a port in use (Gradio
    says "Cannot find empty port" for both, after a traceback, and points at its own settings). An IPv6 address may
    be given in brackets (``[::1]``), as in a URL and as the loopback check reads it."""
    import errno
    import socket

    from deploy.demo.page import DemoError

    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # the address Gradio binds
    try:
        family, kind, proto, _, address = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError) as err:
        raise DemoError(f"--host {host}: not a host name or address this machine can resolve ({err})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no clash
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DemoError(f"--port {port}: already in use on {host} (another demo?); stop it or choose "
                                "another --port") from None
            raise DemoError(f"--host {host} --port {port}: cannot serve there ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.demo ...``: the same flags as ``adapt demo``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.demo")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    add_demo_parser(verbs)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "demo":
        argv = ["demo", *argv]
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:  # Ctrl+C while the model loads or the page is served
        print("adapt demo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)  # `adapt demo`'s rule: anticipated failures in one line, bugs traced
        if message is None:
            raise
        print(f"adapt demo: error: {message}", file=sys.stderr)
        return 1
