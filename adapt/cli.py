"""The `adapt` command line. Verbs are thin: each parses its flags and calls one library function.

Errors: a :class:`~model.errors.PocketAdaptError` (bad input, settings or files the user can fix) and the
anticipated ``OSError`` kinds (no such file, a file where a folder should be, permission denied, disk full,
read-only file system) are printed as one line, ``adapt VERB: error: ...``, exit status 1; Ctrl-C prints
``adapt VERB: interrupted``, exit status 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import sys
import time
from pathlib import Path

from deploy.runtimes import RUNTIMES
from model.arguments import blank_flag, positive_int, sampling_seed, sampling_temperature
from model.errors import PocketAdaptError, user_error_message
from model.limits import DEFAULT_MAX_PIXELS, MAX_IMAGES, MAX_SEED
from model.progress import LINES, shows_bar

DEFAULT_QUESTION = "What shapes are in the picture?"
# adapt eval: the flag that lists the variants (export types) of each export runtime
VARIANT_FLAGS = {"llamacpp": "gguf_type", "onnx": "onnx_type", "executorch": "executorch_type"}
# --no-progress of eval, convert and synthesize
NO_PROGRESS_HELP = ("no progress output (without it: a bar on a terminal, a plain line every tenth of the work "
                    "when stderr is not a terminal)")


class CliError(PocketAdaptError, ValueError):
    """A command line the user can fix (a malformed --option, an impossible size); also: nothing converted."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may also follow flags (`adapt train r.yaml --no-progress training.max_steps=5`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            verb = parser.verb_parsers.get(args.verb, parser)  # its usage and `adapt VERB: error:`, not the top-level's
            stray = [e for e in extra if not e.startswith("-")]
            takes_model = any("--model" in action.option_strings for action in verb._actions)
            hint = f" (a model is given with --model: --model {stray[0]})" if stray and takes_model else ""
            pairs = [e.split("=", 1)[1] if e.startswith("-") else e for e in extra if "=" in e]
            if hasattr(args, "overrides") and pairs:  # `--set k=v`, `-o k=v`: other tools' spellings
                hint = f" (recipe overrides take no flag: give KEY=VALUE after the recipe, e.g. {pairs[0]})"
            verb.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # one progress setting for every verb: --no-progress nothing, a bar on a terminal, plain lines in a log (where a
    # bar's frames would be joined by \r); libraries' own bars only with a bar
    piped = argv is None and hasattr(args, "no_progress") and not sys.stderr.isatty()
    args.progress = False if getattr(args, "no_progress", False) else LINES if piped else True
    if argv is None:
        _terminate_as_interrupt()
        _printable_stdout()
    try:  # the imports take seconds: Ctrl-C during them is an interrupt like any other, not a traceback
        _quiet_libraries(progress=shows_bar(getattr(args, "progress", True)), command_line=argv is None)
        if getattr(args, "precheck", None):  # a verb's flag checks that import nothing heavy: said before the imports
            args.precheck(args)
        if argv is None and getattr(args, "builds_model", False):
            _import_model_stack()
        return args.handler(args) or 0
    except KeyboardInterrupt:
        if "LOCAL_RANK" not in os.environ:  # Ctrl-C reaches every worker too; the launching process says it once
            print(f"adapt {args.verb}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        if "LOCAL_RANK" not in os.environ:  # a data-parallel worker is stopped by its launcher, which says it
            print(f"adapt {args.verb}: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `adapt ... | head` closed the pipe: stop quietly, as other command-line tools do
        _silence_stdout()
        return 141
    except Exception as err:
        if "LOCAL_RANK" in os.environ and getattr(args, "builds_model", False):
            from .train import lost_peer

            if lost_peer(err):  # the launcher names the process that is gone
                return PEER_LOST
        message = user_error_message(err, getattr(args, "out", None))
        if message is None:
            raise  # a bug: keep the traceback
        if int(os.environ.get("RANK", "0")) == 0:  # every process of a data-parallel run meets the same mistake
            print(f"adapt {args.verb}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if argv is None:  # a SIGTERM while exiting (torchrun stopping the peers of a failed worker) just ends it
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# a data-parallel worker that stopped because another process of the run is gone, not for a reason of its own
PEER_LOST = 75


RUN_FOLDER_ENV = "POCKET_ADAPT_RUN_FOLDER"  # the run's output.dir, for the launcher to name its checkpoint

# torchrun, whose failure report (a traceback of its own and a "Root Cause" table) is dropped: the worker that
# failed has printed its one line already, and the launcher exits with that worker's status
_TORCHRUN = f"""\
import logging, os, signal, sys
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main
for name in ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.elastic.agent.server.api"):
    logging.getLogger(name).setLevel(logging.CRITICAL)
def kept():  # rank 0 says which checkpoint holds the run; killed, it cannot
    try:
        from adapt.checkpointing import usable_checkpoint

        latest, _ = usable_checkpoint(os.environ[{RUN_FOLDER_ENV!r}])
    except Exception:  # (no run folder given, or its checkpoints are damaged: the next run says so)
        return ""
    if latest is None:
        return "; no checkpoint was written yet: the same command starts over"
    return f"; {{latest.name}} holds step {{latest.name.rsplit('-', 1)[1]}}: run the same command to resume from it"
try:
    main(sys.argv[1:])
except SignalException as err:  # Ctrl-C or SIGTERM: passed on to the workers, which said what the run kept
    sys.exit(128 + err.sigval)
except ChildFailedError as err:
    failures = sorted(err.failures.values(), key=lambda f: f.local_rank)
    # killed (the out-of-memory killer, a kill -9): that worker could not say so itself, and its peers then failed
    # for want of it (they exit {PEER_LOST} without a word); torchrun SIGTERMs the others
    killed = [f for f in failures if f.exitcode < 0 and -f.exitcode != signal.SIGTERM]
    said = next((f.exitcode for f in failures if f.exitcode > 0 and f.exitcode != {PEER_LOST}), None)
    if killed or said is None:
        killed = killed or [f for f in failures if f.exitcode < 0]
        if killed:
            f = killed[0]
            print(f"adapt: the process of local rank {{f.local_rank}} was killed by "
                  f"{{signal.Signals(-f.exitcode).name}}{{kept() if f.local_rank == 0 else ''}}", file=sys.stderr)
        else:
            print("adapt: a process of the run lost contact with the others", file=sys.stderr)
        said = None
    sys.exit(said or 1)
"""


class _Terminated(BaseException):
    """SIGTERM (``kill``, a job scheduler, torchrun stopping its workers), raised where the program was, so that
    what Ctrl-C cleans up is cleaned up too: an export's staging folder, a run's lock."""


def _terminate_as_interrupt() -> None:
    import signal

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked child (a data-loader worker) ends as it would have without this
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise _Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def _quiet_libraries(progress: bool, command_line: bool = True) -> None:
    """Keep off stderr what a user can neither act on nor needs: torchao's note that its optional CUDA kernels do
    not load on this machine, the torch deprecation warnings torchao's import triggers (transformers imports
    torchao when it is installed), the ONNX exporter's notes on torchvision ops (not a dependency), Pillow's logged
    errors (each also raised, and reported by adapt); without progress, the libraries' own bars too (transformers'
    shard writer). On the command line, pocket-adapt's own warnings print as ``warning: ...`` lines instead of
    Python's source-location form."""
    import logging

    from model import QUIET_LOGGERS

    for name in (*QUIET_LOGGERS, "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Pillow logs an error (a 13-band TIFF's "More samples per pixel than can be decoded") just before it raises,
    # and the raise becomes adapt's own line naming the file
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    if not progress:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub / transformers on import
        if "transformers.utils.logging" in sys.modules:
            sys.modules["transformers.utils.logging"].disable_progress_bar()
    if _cpu_only_machine():  # DeepSpeed (imported by transformers) would print that it found no accelerator
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if command_line:  # (not when a test or a script calls main(): it keeps its own warning handling)
        _show_our_warnings_as_lines()


def _import_model_stack() -> None:
    """Import torch and transformers' model base with the cyclic garbage collector paused, then freeze what the
    imports made (`gc.freeze`) and resume it: for the command line's verbs that build a model, not for library use.

    The imports create some 380,000 long-lived objects. With the collector running, each of its full passes
    during the imports walks all of them, and so does the last pass as the interpreter exits: together about a
    third of `adapt inspect --model PRESET`'s wall time on a 2-core machine (bench/bench_startup.py). Frozen
    objects are left out of every later pass; they are module-level objects that live until exit anyway, and
    reference counting still frees any of them that is dropped."""
    import gc

    gc.disable()
    try:
        import torch  # noqa: F401
        import transformers.modeling_utils  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def _cpu_only_machine() -> bool:
    """No accelerator DeepSpeed could use, judged without importing torch: Linux with no NVIDIA / AMD / Gaudi
    device node and none of the accelerator extensions DeepSpeed looks for."""
    import glob
    import importlib.util

    if not sys.platform.startswith("linux"):
        return False
    if any(glob.glob(pattern) for pattern in ("/dev/nvidia*", "/dev/kfd", "/dev/accel*", "/dev/davinci*")):
        return False
    return not any(importlib.util.find_spec(name) for name in
                   ("intel_extension_for_pytorch", "habana_frameworks", "torch_npu", "torch_mlu", "torch_sdaa"))


def _show_our_warnings_as_lines() -> None:
    import warnings

    shown = warnings.showwarning
    root = Path(__file__).resolve().parents[1]
    ours = tuple(str(root / pkg) + os.sep for pkg in ("adapt", "model", "domains", "deploy"))

    def show(message, category, filename, lineno, file=None, line=None):  # ours as a line, not a source location
        if str(filename).startswith(ours):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _printable_stdout() -> None:
    """On a stdout whose encoding cannot write every character (a non-UTF-8 locale: LANG=en_US.ISO-8859-1, or
    LC_ALL=C with PYTHONUTF8=0), write those it cannot as ``\\xe9`` escapes, as Python does on stderr, rather than
    end in a UnicodeEncodeError (a path or an answer with an ``é``; the quick start's last line, after all the work)."""
    import codecs

    encoding = getattr(sys.stdout, "encoding", None) or ""
    try:
        utf = codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        utf = False
    if not utf and callable(getattr(sys.stdout, "reconfigure", None)):
        sys.stdout.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (`adapt ... | head`), so that the flush at exit cannot
    fail again with a second BrokenPipeError."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _q(value: str | os.PathLike) -> str:
    """`value` as one shell word (quoted where it holds spaces or other special characters), for `next:` lines."""
    import shlex

    return shlex.quote(str(value))


def _path(text: str) -> Path:
    """A path argument with ``~`` expanded: the shell leaves ``--out=~/runs`` and quoted paths as they are, and a
    folder named ``~`` would be made in the working folder instead."""
    return Path(text).expanduser()


def _tile_count(text: str) -> int:
    """A tile cap given on the command line: 1 to :data:`~model.limits.MAX_TILES_LIMIT`, a usage error naming the flag
    otherwise (not the ``TilingConfig.max_tiles`` it becomes)."""
    from model.limits import MAX_TILES_LIMIT

    value = positive_int(text)
    if value > MAX_TILES_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TILES_LIMIT} (InternVL uses up to 12 tiles per image), "
                                         f"got {value}")
    return value


# `adapt tiles --images`: past this, one tile per image at InternVL2's 256 tokens (65,536 image tokens) fills no small
# model's context many times over; a plan for more answers nothing (and a shell glob's count is a slip)
MAX_PLAN_IMAGES = 256


def _image_count(text: str) -> int:
    """`adapt tiles --images`: 1 to :data:`MAX_PLAN_IMAGES`, a usage error naming the bound otherwise."""
    value = positive_int(text)
    if value > MAX_PLAN_IMAGES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PLAN_IMAGES} (one tile each, {MAX_PLAN_IMAGES * 256:,} "
                                         f"image tokens at 256 a tile, is past any small model's context), got {value}")
    return value




class _Version(argparse.Action):
    """--version: "pocket-adapt X.Y.Z" on stdout, the version read only when asked (see adapt.__getattr__)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from adapt import __version__

        print(f"pocket-adapt {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from model.limits import MIN_TEMPERATURE

    parser = argparse.ArgumentParser(prog="adapt", description="Adapt small vision-language models to specialist fields.")
    parser.add_argument("--version", action=_Version, help="print pocket-adapt's version and exit")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    parser.verb_parsers = verbs.choices

    chat = verbs.add_parser("chat", help="ask a model about images", description="Ask a model about one or more images.")
    chat.add_argument("question", nargs="?", default=DEFAULT_QUESTION, help=f"the question (default: {DEFAULT_QUESTION!r})")
    _model_flags(chat)
    chat.add_argument("--image", "-i", action="append", default=[],
                      help="image file (repeat for several images); without one the question is asked with no "
                           "picture, and a note says so")
    chat.add_argument("--example-image", action="store_true", help="use the bundled example image")
    chat.add_argument("--domain", help="read the images as this domain's demo does (DICOM slices and series, "
                                       "multi-band GeoTIFFs, camera sets; see `adapt domains`), with its prompt")
    chat.add_argument("--read-option", action="append", default=[], metavar="KEY=VALUE",
                      help="--domain only: a reading option of the domain's demo (e.g. window=lung), repeatable")
    chat.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest answer in tokens (default 64)")
    chat.add_argument("--temperature", type=sampling_temperature, default=0.0,
                      help=f"0 = greedy (default), else sampled at this temperature (at least {MIN_TEMPERATURE:g})")
    chat.add_argument("--seed", type=sampling_seed, default=0,
                      help=f"random seed of sampling (--temperature > 0), every runtime: 0 to {MAX_SEED} "
                           "(default 0: the same draw each run)")
    chat.add_argument("--max-tiles", type=_tile_count, help="override the model's tile cap for this question (1-40)")
    chat.add_argument("--system", help="system message (default: the chat template's)")
    chat.add_argument("--show-prompt", action="store_true", help="print the prompt with image tokens summarised")
    chat.add_argument("--interactive", action="store_true",
                      help="go on talking about the same images: after the answer, read follow-up questions from "
                           "stdin, one a line, each asked with the conversation so far, until an empty line, /exit "
                           "or the end of input")
    chat.add_argument("--keep-repeats", action="store_true",
                      help="let an answer that repeats itself run to --max-new-tokens (default: cut it after a few repeats)")
    chat.add_argument("--runtime", choices=["pytorch", *RUNTIMES], default="pytorch",
                      help="; ".join(f"{r.name}: {r.help}" for r in RUNTIMES.values()))
    chat.add_argument("--preprocess", choices=["pocket", "llamacpp"], default="pocket",
                      help="llamacpp runtime: cut tiles as training did (default), or let llama.cpp preprocess the image")
    chat.set_defaults(handler=_chat, builds_model=True)

    export = verbs.add_parser("export", help="write a checkpoint in a format other tools load")
    _model_flags(export)
    export.add_argument("--format", "-f", required=True, choices=["hf", "internvl", "pocket", "gguf", "mobilevlm", "onnx", "executorch",
                                                                "tensorrt"],
                        help="gguf: llama.cpp's <name>-<type>.gguf + mmproj-<name>-f16.gguf; mobilevlm: the "
                             "MobileVLM V2 layout with its CLIP tower in vision_tower/; onnx: vision.onnx, embed.onnx, "
                             "decoder.onnx for onnxruntime; executorch: model.pte (XNNPACK) for ExecuTorch")
    export.add_argument("--out", "-o", required=True, type=_path)
    export.add_argument("--force", action="store_true", help="export into a non-empty folder, replacing the files an export owns")
    export.add_argument("--type", dest="gguf_type", choices=["f32", "f16", "q8_0", "q4_k_m"],
                        help="gguf only: weight type of the text model (default f16; the mmproj is f16, f32 with f32)")
    export.add_argument("--name", help="gguf only: file name stem (default: the preset's or model folder's name; for a run's final/, "
                              "the run folder's: runs/x/train/final -> train)")
    export.add_argument("--quantize", choices=["int8"],
                        help="onnx or executorch only: int8 (onnx: onnxruntime's dynamic int8 quantisation of the vision and "
                             "decoder MatMuls; executorch: torchao int8 per-channel weights with dynamic int8 activations, run by XNNPACK)")
    export.add_argument("--max-seq-len", type=positive_int,
                        help="executorch only: positions of the static KV cache (default: the model's context, at most "
                             "4096; at least one image at one tile and a short question)")
    export.add_argument("--adapter", type=_path, help="a LoRA adapter folder (adapter_config.json) to merge before export")
    export.add_argument("--recipe", type=_path, help="tensorrt only: a recipe whose tiling sets the engine profiles "
                                                    "(default: the model's own tiling)")
    export.add_argument("--max-images", type=positive_int,
                        help="tensorrt only: the most images one prompt may hold; the largest vision profile and "
                             "max_multimodal_len take the most tiles such a prompt gives (default 16)")
    export.add_argument("--opset", type=int, choices=(16, 17, 18),
                        help="tensorrt only: the graphs' ONNX opset (default 17, which TensorRT 8.6 and 10 parse, "
                             "JetPack 6.0 and 6.1; 16 decomposes LayerNormalization for TensorRT 8.5, JetPack 5; "
                             "18 needs TensorRT 10, JetPack 6.1)")
    export.add_argument("--max-new-tokens", type=positive_int,
                        help="tensorrt only: the answer tokens TensorRT-LLM's max_input_len leaves room for within "
                             "max_seq_len (default 256); fewer leave a longer prompt room")
    export.add_argument("--no-progress", action="store_true", help="no progress bars")
    export.set_defaults(handler=_export, builds_model=True)

    inspect = verbs.add_parser("inspect", help="describe a checkpoint or preset: layout, parts, tiling, template")
    _model_flags(inspect)
    inspect.set_defaults(handler=_inspect, builds_model=True)

    tiles = verbs.add_parser("tiles", help="plan the tiles and image tokens of an image size (no pixels read)",
                             description="Plan the tile grid and image tokens of an image size as a model's processor "
                                         "cuts it. Without --model: InternVL2's tiling (448 px tiles, 1-12 tiles and "
                                         "a thumbnail, 256 tokens per tile); the flags override either.")
    tiles.add_argument("size", help="WIDTHxHEIGHT, e.g. 1600x900, or an image file (its header: size, EXIF orientation)")
    tiles.add_argument("--model", "-m", help="preset name or checkpoint directory whose tiling and tokens per tile to "
                                             "plan with, read from its config (no weights read)")
    tiles.add_argument("--tile-size", type=positive_int,
                       help=f"tile side in pixels (default: the model's, else 448); without --model a multiple of "
                            f"{_INTERNVL2_GRID} from {_INTERNVL2_GRID} to {_MAX_TILE_SIZE} (InternViT's 14 px patches, "
                            "2x2 pixel shuffle), tokens per tile then (size/28)^2; a --model's tiles are the size its "
                            "vision tower takes, as in recipes")
    tiles.add_argument("--max-tiles", type=_tile_count, help="default: the model's, else 12")
    tiles.add_argument("--min-tiles", type=_tile_count, help="default: the model's, else 1")
    tiles.add_argument("--tokens-per-tile", type=positive_int, help="default: the model's, else 256")
    tiles.add_argument("--no-thumbnail", action="store_true", help="no thumbnail after the tiles (default: the model's "
                                                                   "setting, else a thumbnail)")
    tiles.add_argument("--images", type=_image_count, default=1,
                       help=f"images of this size in one sample (six camera views: 6; at most {MAX_PLAN_IMAGES}); "
                            "--max-tiles is shared out among them as in training, max(1, max_tiles // images) each")
    tiles.add_argument("--pool", type=positive_int, default=1,
                       help="pooled pixel shuffle (recipe model.projector_options.pool): tokens per tile / pool^2")
    tiles.set_defaults(handler=_tiles)
    # `-5x10` is a (bad) size, not an unknown option: argparse takes only `-5` or `-.5` for a negative number before
    # 3.13, and would answer "the following arguments are required: size"; tiles has no option spelled with a digit
    tiles._negative_number_matcher = re.compile(r"^-\.?\d")

    presets = verbs.add_parser("presets", help="list the built-in model presets")
    presets.set_defaults(handler=_presets)

    _recipe_verbs(verbs)
    _domain_verbs(verbs)
    # light: gradio is imported only when the verb runs
    from deploy.demo.cli import add_demo_parser

    add_demo_parser(verbs)
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="pocket-tiny", help="preset name or checkpoint directory (default: pocket-tiny)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load in this dtype")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--allow-pickle", action="store_true", help="read .bin weights with torch.load(weights_only=True)")
    parser.add_argument("--vision", help="another vision tower in the model's place: a tower folder (adapt distill's "
                                         "final/), a checkpoint folder or a preset")
    parser.add_argument("--vision-adapter", choices=["auto", "fresh"], default="auto",
                        help="with --vision: auto (default) puts a distilled tower's vision adapter in front of the "
                             "model's trained projector where it fits; fresh: a fresh projector for a tower of another width")


def _check_model_flags(args) -> None:
    """The model flags a command line may not combine, refused before anything is built or read."""
    if args.vision_adapter != "auto" and args.vision is None:
        raise CliError(f"--vision-adapter {args.vision_adapter} applies with --vision (another vision tower)")


def _load(args):
    import model

    _check_model_flags(args)
    return model.load(args.model, dtype=args.dtype, device=args.device, allow_pickle=args.allow_pickle,
                      vision=args.vision, vision_adapter=args.vision_adapter)


def _chat(args) -> int:
    from model.resources import assets_dir
    from model.tiling import ImageLoadError

    blank = blank_flag(args, ("model", "device", "vision", "image", "domain"))
    if blank:  # `--domain ""` chatted with no domain, `--model ""` named the current folder
        raise CliError(f"{blank} is empty; give a value or leave the flag out for the default")
    if not args.question.strip():  # an empty "$QUESTION": the model would answer no question at all
        raise CliError(f"the question is empty; ask one, or leave it out for the default ({DEFAULT_QUESTION!r})")
    try:
        # a question has words; one word that names an existing path is far likelier a misplaced argument
        one_word = len(args.question) < 4096 and not any(c.isspace() for c in args.question.strip())
        named = os.stat(args.question.strip()) if one_word else None
    except (OSError, ValueError):  # no such path, a name too long for one, a NUL: a question
        named = None
    if named is not None:  # `adapt chat runs/x/final ...` would ask the default model that "question"
        import stat

        flag, what = ("--model", "a model") if stat.S_ISDIR(named.st_mode) else ("--image", "an image")
        raise CliError(f"{args.question!r} is a {'folder' if flag == '--model' else 'file'}, not a question: give "
                       f"{what} with {flag} {_q(args.question)}")
    if one_word and named is None and Path(args.question.strip()).suffix.lower() in _PICTURE_SUFFIXES:
        # `adapt chat --model m shot.jpg` with a typo in the name: the model was asked "shot.jpg", status 0
        raise CliError(f"{args.question!r} names a picture, but no such file exists; give an image with --image PATH "
                       "(the question, if any, in quotes)")
    images = list(args.image)
    if args.example_image:
        images.append(str(assets_dir() / "example.png"))
    if len(images) > MAX_IMAGES:  # each would be read and tiled before the context check refused the prompt
        raise CliError(f"{len(images)} images: at most {MAX_IMAGES} go into one question")
    if args.domain:
        images, args.question = _read_for_domain(args, images)
    elif args.read_option:
        raise CliError("--read-option applies with --domain")
    if args.interactive and args.runtime != "pytorch":
        raise CliError("--interactive applies to the pytorch runtime; ask an export one question at a time")
    if args.preprocess == "llamacpp" and args.max_tiles is not None:  # said before llama.cpp loads the model
        raise CliError("--max-tiles applies to pocket preprocessing: llama.cpp's own (--preprocess llamacpp) takes its "
                       "tile counts from the mmproj; leave --preprocess at pocket")
    try:
        return _chat_pytorch(args, images) if args.runtime == "pytorch" else _chat_export(args, images)
    except ImageLoadError as err:
        raise _domain_hint(err) from None


def _note_no_image(images: list) -> None:
    """Said once the model is loaded (a model that fails to load says only that): a text-only question is allowed,
    but the default question is about a picture."""
    if not images:
        print("note: no --image (nor --example-image): the model answers without a picture", file=sys.stderr)


def _capped_tiling(tiling, max_tiles: int):
    """`tiling` with `adapt chat --max-tiles`' cap. A cap under the model's min_tiles lowers it too, as the export
    runtimes do, and says so on stderr: the model then sees fewer tiles than it was trained with."""
    import dataclasses

    if max_tiles < tiling.min_tiles:
        print(f"note: --max-tiles {max_tiles} is below the model's min_tiles {tiling.min_tiles}: using "
              f"{max_tiles}-{max_tiles} tiles", file=sys.stderr)
    return dataclasses.replace(tiling, max_tiles=max_tiles, min_tiles=min(tiling.min_tiles, max_tiles))


def _chat_pytorch(args, images: list) -> int:
    import torch

    from model.chat import ConversationError

    if args.preprocess != "pocket":
        raise CliError("--preprocess llamacpp applies to --runtime llamacpp")
    vlm, processor = _load(args)
    _note_no_image(images)
    tiling = None if args.max_tiles is None else _capped_tiling(processor.tiling, args.max_tiles)
    torch.manual_seed(args.seed)  # once: a session's answers are one run of draws
    messages = [{"role": "user", "content": args.question}]
    while True:
        try:
            answer = _chat_turn(args, vlm, processor, messages, images, tiling)
        except ConversationError as err:
            if len(messages) == 1:
                raise
            print(f"adapt chat: {err}; ask again", file=sys.stderr)  # a bad follow-up ends nothing: the history stays
            messages.pop()
        else:
            if not args.interactive:
                return 0
            messages.append({"role": "assistant", "content": _kept_answer(processor, answer)})
        question = _follow_up()
        if question is None:
            return 0
        messages.append({"role": "user", "content": question})


def _kept_answer(processor, answer: str) -> str:
    """`answer` as the conversation keeps it for the next question: an ``<image>`` placeholder or a control token the
    model wrote as text is left out, with a note (`check_text` refuses them in an answer, so kept, they would refuse
    every later question of the session)."""
    from model.processor import IMAGE_PLACEHOLDER

    removed: dict[str, None] = {}
    kept = answer
    while True:  # until none is left: removing one may join the text around it into another
        found = [IMAGE_PLACEHOLDER] * (IMAGE_PLACEHOLDER in kept) + processor.control_tokens(kept)
        if not found:
            break
        removed.update(dict.fromkeys(found))
        for text in found:
            kept = kept.replace(text, "")
    if removed:
        print(f"note: the answer's {', '.join(removed)} left out of the conversation's history (an answer may hold no "
              "image placeholder or control token)", file=sys.stderr)
    return kept


def _follow_up() -> str | None:
    """`adapt chat --interactive`: the next question from stdin, or None at its end, an empty line or ``/exit``.
    A follow-up may not hold ``<image>``: the images stay with the first question."""
    from model.processor import IMAGE_PLACEHOLDER

    while True:
        if sys.stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        question = line.strip()
        if not question or question == "/exit":
            return None
        if IMAGE_PLACEHOLDER not in question:
            return question
        print(f"adapt chat: a follow-up question cannot hold {IMAGE_PLACEHOLDER}: the images go with the first "
              "question; ask again", file=sys.stderr)


def _chat_turn(args, vlm, processor, messages: list[dict], images: list, tiling) -> str:
    """Answer the conversation `messages` (ending in a user turn; the images in the first one), printing the answer
    as it comes; returns its text."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from model.generation import (
        FiniteScores,
        PromptTooLongError,
        RepetitionStop,
        StopStreamer,
        answer_room,
        sampling_options,
    )

    encoded = processor(messages, images=images, tiling=tiling, system_message=args.system)
    if args.show_prompt:
        print(processor.show_prompt(encoded.input_ids), file=sys.stderr)
    try:
        room = answer_room(vlm, len(encoded.input_ids), args.max_new_tokens)  # never past the context
    except PromptTooLongError:
        if len(messages) == 1:
            raise
        context = vlm.config.text_config.max_position_embeddings
        raise CliError(f"question {len(messages) // 2 + 1}: the conversation so far takes {len(encoded.input_ids)} "
                       f"tokens, more than the model's context of {context}; start a new `adapt chat` (with "
                       "fewer --max-tiles or a lower --max-new-tokens, a conversation goes on longer)") from None
    print(f"[{args.model}: {len(images)} image(s), {sum(encoded.num_tiles)} tile(s), {len(encoded.input_ids)} tokens]",
          file=sys.stderr)
    inputs = {k: v.to(vlm.device) for k, v in encoded.to_model_inputs().items()}
    sampling = sampling_options(args.temperature)  # pick_token's rule and distribution
    streamer = StopStreamer(processor, on_text=lambda piece: print(piece, end="", flush=True))
    repeating = RepetitionStop(decode=processor.tokenizer.decode)  # a looping answer ("squaresquaresquare…") ends after a few repeats
    stops = StoppingCriteriaList([] if args.keep_repeats else [repeating])
    with torch.inference_mode():
        vlm.generate(**inputs, max_new_tokens=room, pad_token_id=processor.pad_token_id, streamer=streamer,
                     stopping_criteria=stops, logits_processor=LogitsProcessorList([FiniteScores()]),
                     **processor.stop_kwargs(), **sampling)
    print(flush=True)
    cut = None
    if len(streamer.tokens) >= room and not streamer.stopped:
        cut = f"--max-new-tokens {room}" if room == args.max_new_tokens else f"{room} tokens: the model's context is full"
    _answer_notes(streamer.text, repeated=repeating.fired, cut=cut)
    return streamer.text


def _read_for_domain(args, paths: list[str]) -> tuple[list, str]:
    """`adapt chat --domain D`: the images as D's demo reads them (its reader hook, its options' defaults
    overridden by --read-option) and the question behind D's prompt (e.g. ``Slice 4/12: <image>``)."""
    from deploy.demo.hooks import hooks_for, normalize_upload, options_for
    from deploy.demo.session import compose_question
    from domains.base import get_domain

    if not paths:
        raise CliError("--domain reads the --image files; give at least one")
    if args.runtime == "llamacpp" and args.preprocess == "llamacpp":
        raise CliError("--domain gives images read by the domain; llama.cpp's own preprocessing reads files: "
                       "leave --preprocess at pocket")
    plugin = get_domain(args.domain)
    specs = options_for(plugin)
    given = _options(args.read_option, "--read-option")
    read, _draw = hooks_for(plugin)
    params = inspect.signature(read).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):  # a reader taking **options checks them itself
        known = sorted(set(specs) | {p.name for p in params if p.kind is p.KEYWORD_ONLY})
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise CliError(f"--read-option {unknown[0]}: the {args.domain} reader has no such option (it takes: "
                           f"{', '.join(known) or 'none'})")
    options = {name: spec.get("default") for name, spec in specs.items()}
    options.update(given)
    files: list[Path] = []
    for path in map(Path, paths):  # a folder (a DICOM series, a camera set) stands for the files in it
        files += sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")) if path.is_dir() \
            else [path]
    if not files:
        raise CliError(f"--image {' '.join(paths)}: the folder holds no files")
    try:
        upload = normalize_upload(read(files, **options), len(files))
    except ValueError as err:  # the reader's refusal of this input (no DICOM among the files, a bad option)
        raise CliError(f"--domain {args.domain}: {err}") from None
    for warning in upload.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return upload.images, compose_question(args.question, len(upload.images), upload.prompt)


# Picture formats the ordinary reader (model.tiling.load_image) takes whole: a domain reading them (driving,
# medical) reads them through it too, so a file of these kinds that it cannot read is damaged for every reader
_ORDINARY_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".gif"})
# a one-word question ending in one of these is a picture's name given without --image
_PICTURE_SUFFIXES = _ORDINARY_IMAGE_SUFFIXES | {".tif", ".tiff", ".dcm"}


def _domain_hint(err: Exception) -> Exception:
    """An --image the ordinary reader could not read: the error, naming the domain whose reader takes files of
    its kind (a DICOM file, a 13-band GeoTIFF) where one does; none for a damaged .png / .jpg / ..."""
    from domains.base import get_domain, list_domains

    if not err.reason.startswith("not an image file"):  # damaged, missing, too large: no other reader helps
        return err
    suffix = Path(err.path).suffix.lower()
    if suffix in _ORDINARY_IMAGE_SUFFIXES:
        return err
    readers = [name for name in list_domains() if suffix and suffix in get_domain(name).readers]
    if not readers or not Path(err.path).is_file():
        return err
    return CliError(f"{err}; the {' / '.join(readers)} domain reads {suffix} files: add --domain {readers[-1]}")


def _chat_export(args, images: list[str]) -> int:
    """`adapt chat --runtime llamacpp|onnx|...`: the export folder `--model` answered in that runtime."""
    from deploy.runtimes import get_runtime

    runtime = get_runtime(args.runtime)
    options = {}
    if args.runtime == "llamacpp":
        options["preprocess"] = args.preprocess
    elif args.preprocess != "pocket":
        raise CliError("--preprocess llamacpp applies to --runtime llamacpp")
    if args.dtype or args.device or args.allow_pickle or args.vision:
        raise CliError(f"--dtype, --device, --allow-pickle and --vision apply to the pytorch runtime; an export for "
                       f"{runtime.title} fixed its weight type and model when it was written")
    with runtime.load("chat")(args.model) as vlm:
        _note_no_image(images)
        tiling = vlm.export.tiling
        if args.max_tiles is not None and tiling is not None:
            tiling = _capped_tiling(tiling, args.max_tiles)
        answer = vlm.chat([{"role": "user", "content": args.question}], images, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, seed=args.seed, system=args.system, tiling=tiling,
                          cut_repeats=not args.keep_repeats, **options)
        if args.show_prompt:
            print(answer.prompt, file=sys.stderr)
        t = answer.timings
        print(f"[{Path(args.model).name} in {runtime.title}: {len(images)} image(s), {t['prompt_tokens']} prompt tokens; "
              f"image {t['image_encode_ms']:.0f} ms, prompt {t['prompt_ms']:.0f} ms, "
              f"{t['decode_tokens']} tokens in {t['decode_ms']:.0f} ms]", file=sys.stderr)
        print(answer.text)
        full = len(answer.tokens) >= args.max_new_tokens
        cut = (f"--max-new-tokens {args.max_new_tokens}" if full else
               f"{len(answer.tokens)} tokens: {runtime.context} is full" if answer.context_full else None)
        _answer_notes(answer.text, repeated=answer.repeated, cut=cut, export=True)
    return 0


def _answer_notes(text: str, *, repeated: bool, cut: str | None, export: bool = False) -> None:
    """The stderr notes after an answer, alike for every runtime: a cut repeat, an answer that a token limit ended
    before a stop token (`cut` names the limit), an empty answer (from an export: damaged weights?)."""
    if repeated:
        print("[stopped: the answer had begun repeating itself]", file=sys.stderr)
    elif cut is not None:
        print(f"[cut at {cut}]", file=sys.stderr)
    if not text.strip():
        hint = ("; if `adapt chat` on the PyTorch model answers, the export may be damaged -- export it again" if export
                else "")
        print(f"[no answer: the model's first token ended it{hint}]", file=sys.stderr)


def _export(args) -> int:
    from deploy.hf import check_dtype, check_target, export
    from model.loading import apply_lora_adapter, check_lora_adapter

    options = {}
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise CliError(f"--name {args.name!r}: give a file name stem (letters, digits, . _ -; no folders), "
                       "e.g. --name my-model")
    if args.format == "gguf":
        options = {"qtype": args.gguf_type or "f16", "name": args.name or _model_name(args.model),
                   "progress": args.progress}
    elif args.gguf_type or args.name:
        raise CliError("--type and --name apply to --format gguf only")
    if args.format in ("onnx", "executorch"):
        options = {"quantize": args.quantize, "progress": args.progress}
    elif args.quantize:
        raise CliError("--quantize applies to --format onnx or executorch only")
    if args.format == "executorch":
        options.update(max_seq_len=args.max_seq_len)
    elif args.max_seq_len:
        raise CliError("--max-seq-len applies to --format executorch only")
    if args.recipe is not None and args.format != "tensorrt":
        raise CliError("--recipe applies to --format tensorrt only")
    if args.max_images is not None and args.format != "tensorrt":
        raise CliError("--max-images applies to --format tensorrt only")
    if args.opset is not None and args.format != "tensorrt":
        raise CliError("--opset applies to --format tensorrt only")
    if args.max_new_tokens is not None and args.format != "tensorrt":
        raise CliError("--max-new-tokens applies to --format tensorrt only")
    check_target(Path(args.out), args.force, args.model)  # a refused target fails before the model is loaded
    check_dtype(args.format, args.dtype)
    if args.adapter is not None:
        check_lora_adapter(args.adapter, args.allow_pickle, model=args.model)
    vlm, processor = _load(args)
    if args.format == "tensorrt":
        options = {"tiling": None, "source": None, "progress": args.progress,
                   **({"max_images": args.max_images} if args.max_images else {}),
                   **({"opset": args.opset} if args.opset else {}),
                   **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})}
        if args.recipe is not None:
            from deploy.tensorrt import source_tile_caps

            from .recipe import load_recipe

            recipe = load_recipe(args.recipe)
            options.update(tiling=recipe.tiling_for(processor.tiling), source=f"recipe {args.recipe}")
            source_tile_caps(recipe, processor, options["tiling"], options["source"])
    if args.adapter is not None:
        vlm = apply_lora_adapter(vlm, args.adapter, args.allow_pickle)
    out = export(vlm, processor, args.format, args.out, force=args.force, **options)
    if args.format == "gguf":
        from deploy.gguf import file_names
        from deploy.llamacpp import BUILD_COMMAND, LlamaCppError, binary

        model_file, mmproj_file = file_names(options["name"], options["qtype"])
        try:
            binary()
            build = ""
        except LlamaCppError:
            build = f"{BUILD_COMMAND} (builds llama.cpp, once)   |   "
        print(f"wrote {out / model_file} and {out / mmproj_file}\n"
              f"next: {build}adapt chat --runtime llamacpp --model {_q(out)} --image IMAGE")
    elif args.format == "onnx":
        print(f"wrote vision.onnx, embed.onnx and decoder.onnx ({args.quantize or 'fp32'}) to {out}\n"
              f"next: adapt chat --runtime onnx --model {_q(out)} --image IMAGE")
    elif args.format == "executorch":
        print(f"wrote model.pte ({args.quantize or 'fp32'}; vision_encoder, token_embedding, text_decoder) to {out}\n"
              f"next: adapt chat --runtime executorch --model {_q(out)} --image IMAGE")
    elif args.format == "tensorrt":
        import json

        print(json.loads((out / "fp16_check.json").read_text(encoding="utf-8"))["summary"])
        print(f"wrote the TensorRT bundle to {out} (no engine built: engines are built on the device)\n"
              f"next: copy it to the Jetson, build the engines as {out / 'README.md'} says, then python3 verify.py")
    else:
        print(f"wrote {args.format} checkpoint to {out}")
    return 0


def _model_name(source: str) -> str:
    path = Path(source)
    name = path.resolve().name if path.is_dir() else str(source)
    if name in ("final", "merged") and path.is_dir():  # runs/<recipe>/final -> <recipe>
        name = path.resolve().parent.name
    # the stem --name takes (ASCII letters, digits, . _ -; not starting with '.': a hidden file)
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "-" for c in name).lstrip(".-_")
    return stem or "model"


def _inspect(args) -> int:
    from model.checkpoints.layouts import LAYOUTS, detect_layout
    from model.presets import PRESETS, preset_skeleton

    if args.model in PRESETS and not Path(args.model).is_dir() and args.vision is None:
        _check_model_flags(args)  # as chat: no flag is accepted here that a load would refuse
        if args.device:
            from model.loading import check_device

            check_device(args.device)
        # a preset is a config: described from tensors on the meta device, nothing read or downloaded
        vlm, hub_id = preset_skeleton(args.model), PRESETS[args.model].hub_id
        source = f"preset {args.model}, from its config (no weights read)"
        source += f"; weights: {hub_id} on the hub, or a local copy as --model DIR" if hub_id else ""
        dtype = args.dtype or "float32 when built from the preset; a checkpoint loads in its own dtype"
        rope, released = _rope(vlm.config.text_config), PRESETS[args.model].released_rope
        if released and released != (vlm.config.text_config.rope_parameters or {}).get("rope_type"):
            rope += (f"; the released checkpoint uses {released} scaling, which this preset's config leaves out "
                     "(loading its weights uses the checkpoint's own config)")
    else:
        vlm, _ = _load(args)
        source, dtype, rope = str(args.model), str(vlm.dtype), _rope(vlm.config.text_config)
    if Path(args.model).is_dir():
        layout = LAYOUTS[detect_layout(Path(args.model))].replace("`", "")
    else:  # a preset: the layout its weights come in
        preset = PRESETS[args.model]
        layout = LAYOUTS[preset.layout].replace("`", "") + (" on the hub" if preset.hub_id else ", built in")
    cfg = vlm.config
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rows = [
        ("source", source),
        ("layout", layout),
        ("parameters", f"{count(vlm):,}"),
        ("vision tower", f"{type(vlm.vision_tower).__name__} ({count(vlm.vision_tower):,} params), layer {cfg.vision_feature_layer}"),
        ("projector", f"{cfg.projector_type} {cfg.projector_options or ''} ({count(vlm.multi_modal_projector):,} params"
                      + (f", a vision adapter {cfg.vision_config.hidden_size} -> {cfg.vision_adapter_width} in front)"
                         if cfg.vision_adapter_width else ")")),
        ("language model", f"{type(vlm.language_model).__name__} ({count(vlm.language_model):,} params)"),
        ("rope", rope),
        ("image tokens", f"{_image_tokens(cfg)}, id {cfg.image_token_id} ({cfg.image_context_token})"),
        ("tiling", ", ".join(f"{k}={v}" for k, v in cfg.tiling.items())),
        ("chat template", cfg.chat_template),
        ("dtype", dtype),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _rope(text_config) -> str:
    """The language model's RoPE: its type (plain, or the scaling), theta and configured positions."""
    rope = getattr(text_config, "rope_parameters", None) or {}
    kind = rope.get("rope_type", "default")
    details = [f"factor {rope['factor']}"] if rope.get("factor") is not None else []
    if kind == "longrope":
        details.append(f"{len(rope.get('short_factor') or [])} short and long factors")
    original = rope.get("original_max_position_embeddings") or getattr(text_config, "original_max_position_embeddings",
                                                                        None)
    if kind != "default" and original:
        details.append(f"over {original:,} original positions")
    name = "plain (no scaling)" if kind == "default" else kind + (f" ({', '.join(details)})" if details else "")
    return f"{name}, theta {rope.get('rope_theta')}, max_position_embeddings {text_config.max_position_embeddings:,}"


def _image_tokens(cfg) -> str:
    """Image tokens per tile, or per image where the tiling makes one tile of every image (MobileVLM's pad)."""
    tiling = cfg.tiling_config
    if tiling.mode != "dynamic" or tiling.max_tiles == 1:
        return f"{cfg.image_seq_length} per image (one {tiling.tile_size} px tile, {tiling.mode} mode)"
    tiles = f"{tiling.min_tiles}-{tiling.max_tiles} tiles an image"
    thumbnail = ", and a thumbnail tile where more than one" if tiling.thumbnail else ""
    return f"{cfg.image_seq_length} per {tiling.tile_size} px tile ({tiles}{thumbnail})"


MAX_SIDE = 2**31 - 1  # pixels: the widest side an image format's header can state (PNG, TIFF: 32-bit)
# InternVL2's tower: 14 px patches, whose grid the 2x2 pixel shuffle halves, so a tile is a whole number of 28 px
_INTERNVL2_GRID = 28
# the largest whole-grid tile within tiling.max_pixels' default, as every image must be (7056 = 252 x 28)
_MAX_TILE_SIZE = math.isqrt(DEFAULT_MAX_PIXELS) // _INTERNVL2_GRID * _INTERNVL2_GRID


def _tiles(args) -> int:
    import dataclasses

    from model.tiling import TilingConfig, count_tiles, tile_grid

    if Path(args.size).is_file():
        from PIL import UnidentifiedImageError

        from model.tiling import upright_size

        try:
            (width, height), _ = upright_size(args.size)  # the header only; as load_image turns it (EXIF)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CliError(f"{args.size}: not an image file PIL can read ({exc})") from None
    else:
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            if Path(args.size).suffix or os.sep in args.size:
                raise CliError(f"{args.size}: no such file (nor a size WIDTHxHEIGHT, e.g. 1600x900)") from None
            raise CliError(f"size {args.size!r} is neither WIDTHxHEIGHT (e.g. 1600x900) nor an image file") from None
    if width < 1 or height < 1:
        raise CliError(f"size {args.size!r}: width and height must be at least 1 pixel")
    if max(width, height) > MAX_SIDE:  # the tile search's arithmetic overflows far past any real image
        raise CliError(f"size {args.size!r}: width and height must be at most {MAX_SIDE} pixels")
    tiling, per_tile = TilingConfig(), 256  # InternVL2's
    if args.model is not None:
        from model.loading import load_config

        config = load_config(args.model)
        tiling, per_tile = config.tiling_config, config.image_seq_length
        if args.tile_size is not None and args.tile_size != tiling.tile_size:
            # as a recipe's tiling.tile_size: the tower's position embeddings and token count fix its tile
            raise CliError(f"--tile-size {args.tile_size} differs from {args.model}'s image size {tiling.tile_size} "
                           "(the size its vision tower takes; a recipe's tiling.tile_size must be it too); leave "
                           "--tile-size out, or plan without --model")
    elif args.tile_size is not None:
        if args.tile_size % _INTERNVL2_GRID or not _INTERNVL2_GRID <= args.tile_size <= _MAX_TILE_SIZE:
            raise CliError(f"--tile-size {args.tile_size}: InternVL2's tiles are a multiple of {_INTERNVL2_GRID} px "
                           f"(14 px patches, 2x2 pixel shuffle) from {_INTERNVL2_GRID} to {_MAX_TILE_SIZE}, e.g. 448")
        per_tile = (args.tile_size // _INTERNVL2_GRID) ** 2  # 448 px: 16 x 16 = 256
    given = {"tile_size": args.tile_size, "min_tiles": args.min_tiles, "max_tiles": args.max_tiles}
    given = {k: v for k, v in given.items() if v is not None}
    if args.no_thumbnail:
        given["thumbnail"] = False
    if "max_tiles" in given and "min_tiles" not in given:
        if given["max_tiles"] < tiling.min_tiles:
            print(f"note: --max-tiles {given['max_tiles']} is below the model's min_tiles {tiling.min_tiles}: using "
                  f"{given['max_tiles']}-{given['max_tiles']} tiles", file=sys.stderr)
        given["min_tiles"] = min(tiling.min_tiles, given["max_tiles"])
    min_tiles, max_tiles = given.get("min_tiles", tiling.min_tiles), given.get("max_tiles", tiling.max_tiles)
    if min_tiles > max_tiles:
        raise CliError(f"--min-tiles {min_tiles} is larger than --max-tiles {max_tiles}")
    whose = ("--tokens-per-tile" if args.tokens_per_tile else f"{args.model}'s" if args.model else
             f"InternVL2's at {args.tile_size} px" if args.tile_size else "InternVL2's")
    per_tile = args.tokens_per_tile or per_tile
    if per_tile % (args.pool * args.pool):
        raise CliError(f"{per_tile} image tokens per tile ({whose}) do not divide by --pool {args.pool} squared")
    per_tile //= args.pool * args.pool
    config = dataclasses.replace(tiling, **given).for_images(args.images)
    if config.mode == "dynamic":
        cols, rows = tile_grid(width, height, config.min_tiles, config.max_tiles, config.tile_size)
    else:  # pad / crop (MobileVLM) or resize: one tile whatever the size
        cols = rows = 1
    n = count_tiles(width, height, config)
    print(f"{width}x{height}: grid {cols}x{rows} (cols x rows), {n} tile{'s' if n > 1 else ''}{' incl. thumbnail' if n > cols * rows else ''}, "
          f"{n * per_tile} image tokens" + (f" per image; {args.images} images: {args.images * n} tiles, "
                                             f"{args.images * n * per_tile} image tokens" if args.images > 1 else "")
          + f" ({config.tile_size} px tiles" + (f", {config.mode} mode)" if config.mode != "dynamic" else ")"))
    if width * height > config.max_pixels:
        print(f"note: {width}x{height} = {width * height:,} pixels is above the limit of {config.max_pixels:,} "
              "(tiling.max_pixels): chat and the demo refuse such an image and training skips it; downscale it",
              file=sys.stderr)
    return 0


def _presets(args) -> int:
    from model.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, preset in PRESETS.items():
        where = f"  [{preset.hub_id}]" if preset.hub_id else "  [built in]"
        print(f"{name:<{width}}  {preset.description}{where}")
    return 0


# ---------------------------------------------------------------------- recipe verbs: validate, recipes, init
_RECIPE_HELP = "the recipe .yaml"
_OVERRIDES_HELP = ("override recipe keys, e.g. training.max_steps=20 parts.llm.mode=full; values are read as YAML "
                   "(key= sets null), paths relative to the recipe's folder as in the file")


def _recipe_verbs(verbs) -> None:
    train = verbs.add_parser("train", help="train (or resume) the run a recipe describes",
                             description="Train from a recipe; resumes from the newest complete checkpoint in its output dir.")
    train.add_argument("recipe", type=_path, help=_RECIPE_HELP)
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    train.add_argument("--nproc-per-node", type=positive_int, default=1, help="data-parallel processes (relaunches under torchrun)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar: a line every logging.every steps (train_log.jsonl gets every step)")
    train.add_argument("--allow-changes", action="store_true",
                       help="resume even though the recipe was edited since the checkpoint (the new values apply)")
    train.set_defaults(handler=_train, builds_model=True)

    distill = verbs.add_parser("distill", help="distil a vision tower (teacher -> student) as a recipe with distill: says",
                               description="Distil a vision encoder from a recipe with a distill: section; resumes from the "
                                           "newest complete checkpoint in its output dir. Writes a vision-tower folder a "
                                           "training recipe names as model.vision.")
    distill.add_argument("recipe", type=_path, help=_RECIPE_HELP)
    distill.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    distill.add_argument("--nproc-per-node", type=positive_int, default=1, help="data-parallel processes (relaunches under torchrun)")
    distill.add_argument("--no-progress", action="store_true",
                         help="no progress bar: a line every logging.every steps (train_log.jsonl gets every step)")
    distill.add_argument("--allow-changes", action="store_true",
                         help="resume even though the recipe was edited since the checkpoint (the new values apply)")
    distill.set_defaults(handler=_train, builds_model=True)

    evaluate = verbs.add_parser("eval", help="score a model on a recipe's held-out sources (domain and general side by side)")
    evaluate.add_argument("recipe", type=_path, help=_RECIPE_HELP)
    evaluate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    evaluate.add_argument("--model", action="append", default=[], metavar="[LABEL=]SOURCE",
                          help="model to score (repeatable); default: base = recipe model, adapted = the run's final model")
    evaluate.add_argument("--out", type=_path, help="report folder (default: <output.dir>/eval)")
    evaluate.add_argument("--runtime", choices=["pytorch", *RUNTIMES], default="pytorch",
                          help="export each model in the runtime's format and score it there; llamacpp: GGUF in "
                               "llama.cpp (built by python -m deploy.llamacpp); onnx: ONNX in onnxruntime; executorch: .pte in "
                               "ExecuTorch")
    evaluate.add_argument("--gguf-type", action="append", choices=["f32", "f16", "q8_0", "q4_k_m"], default=[],
                          help="llamacpp runtime: GGUF type(s) to score (repeatable; default f16); labels get -<type>")
    evaluate.add_argument("--onnx-type", action="append", choices=list(RUNTIMES["onnx"].variants), default=[],
                          help="onnx runtime: precision(s) to score (repeatable; default fp32); labels get -<type>")
    evaluate.add_argument("--executorch-type", action="append", choices=list(RUNTIMES["executorch"].variants),
                          default=[], help="executorch runtime: precision(s) to score (repeatable; default fp32); "
                                           "labels get -<type>")
    evaluate.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    evaluate.set_defaults(handler=_eval, builds_model=True)

    quick = verbs.add_parser("quickstart", help="generate data, score the base model, adapt it, score again (CPU, minutes)",
                             description="Generate a field's synthetic data, score pocket-tiny on its held-out sets, "
                                         "adapt it, score it again. Starts over in OUT: writes OUT/<template>.yaml, "
                                         "the data under OUT (data/, raw/), the run in OUT/train and the report in "
                                         "OUT/report; refuses, before writing anything, where that would replace "
                                         "something a quick start did not write (see --force).")
    quick.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. mixing.general_ratio=0")
    quick.add_argument("--out", type=_path, help="default: runs/quickstart (runs/quickstart-<field> for other fields)")
    quick.add_argument("--field", default="landcover", choices=["landcover", "remote_sensing", "driving", "medical"],
                       help="landcover: the default story; remote_sensing: synthetic GeoTIFF/RSVQA/DIOR sets "
                            "through the remote-sensing converters; driving: synthetic nuScenes + DriveLM "
                            "(the slowest); medical: synthetic DICOM CT series with VQA sets")
    quick.add_argument("--data-only", action="store_true",
                       help="only generate the field's data into OUT/data, the folder its recipe template reads "
                            "(`adapt init quickstart DIR && adapt quickstart --data-only --out DIR`), then stop")
    quick.add_argument("--force", action="store_true",
                       help="start over even where that replaces an edited OUT/<template>.yaml, data folders under "
                            "OUT (raw/, data/...) an earlier quick start did not write, or an OUT/train folder holding "
                            "files adapt train did not write (refused without it; an adapt eval report in "
                            "OUT/train/eval is replaced either way)")
    quick.add_argument("--no-progress", action="store_true",
                       help="no progress output from data generation and scoring (without it: a bar on a terminal, "
                            "a plain line every tenth of the work when stderr is not a terminal); train prints its "
                            "step lines")
    quick.set_defaults(handler=_quickstart, builds_model=True)

    validate = verbs.add_parser(
        "validate", help="check a recipe and print it resolved (absolute paths, every default filled in; null = "
                         "the model's own, e.g. tiling)",
        description="Check a recipe and print it resolved. Exit status 1 (with the reason) when it is not valid. "
                    "On stderr: notes, and the mixing plan adapt train would draw from the sources' records (samples "
                    "per source per epoch, general share achieved), made without loading the model.")
    validate.add_argument("recipe", type=_path, help=_RECIPE_HELP)
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    validate.add_argument("--no-plan", dest="plan", action="store_false",
                          help="check the recipe only: skip the mixing plan, which reads every record (and image "
                               "header) of every source -- minutes on very large sets")
    validate.add_argument("--eval", dest="for_eval", action="store_true",
                          help="check the recipe for `adapt eval` only: it needs data.eval_sources (their files "
                               "present), not data.sources; no run folder check, no mixing plan")
    validate.set_defaults(handler=_validate)

    recipes = verbs.add_parser("recipes", help="list the recipe templates (copy one with `adapt init`)")
    recipes.set_defaults(handler=_recipes)

    init = verbs.add_parser("init", help="copy a recipe template, comments included, into a folder",
                            description="Copy template NAME to DIR/NAME.yaml; never overwrites a file.")
    init.add_argument("name", help="template name (see `adapt recipes`)")
    init.add_argument("dir", type=_path, help="destination folder (created if missing)")
    init.set_defaults(handler=_init)


def _train(args) -> int:
    """`adapt train` and `adapt distill`: the recipe's kind must be the verb's."""
    import os

    from .recipe import load_recipe, recipe_warnings

    recipe = load_recipe(args.recipe, args.overrides)  # fail fast, before any process is launched
    _check_recipe_kind(recipe, args.recipe, args.verb)
    from .train import check_training_sources

    check_training_sources(recipe, args.verb)  # before any note, or any process launched
    if "LOCAL_RANK" not in os.environ:
        for note in recipe_warnings(recipe):
            print(f"note: {note}", file=sys.stderr)
    if args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-c", _TORCHRUN, "--standalone", f"--nproc_per_node={args.nproc_per_node}",
               "-m", "adapt.cli", args.verb, str(args.recipe), *args.overrides] + (["--no-progress"] if args.progress is False else []) \
            + (["--allow-changes"] if args.allow_changes else [])
        # what torchrun sets anyway, given, so that it does not print a banner about it
        launcher = _launch(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                                     RUN_FOLDER_ENV: str(recipe.output.dir)})
        try:
            return launcher.wait()
        except BaseException as stop:  # Ctrl-C or SIGTERM (subprocess.call would SIGKILL torchrun, orphaning its workers)
            _stop_launcher(launcher, stop)
            raise
    if args.verb == "distill":
        from .distill import distill

        final = distill(recipe, progress=args.progress, allow_changes=args.allow_changes)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"vision tower: {final}\nnext: set model.vision: {final} in a training recipe, then adapt train RECIPE")
        return 0
    from .train import train

    final = train(recipe, progress=args.progress, allow_changes=args.allow_changes)
    if int(os.environ.get("RANK", "0")) == 0:
        again = " ".join(_q(a) for a in (args.recipe, *args.overrides))  # output.dir=... must follow
        print(f"final model: {final}\nnext: adapt eval {again}   |   adapt chat --model {_q(final)} --image IMAGE")
    return 0


def _check_recipe_kind(recipe, path: Path, verb: str) -> None:
    """Refuse a recipe of the other kind: a distillation recipe serves `adapt distill` only (its held-out score is the
    feature cosine in its report.md), a training recipe every other verb."""
    from .recipe import DistillRecipe

    if isinstance(recipe, DistillRecipe) == (verb == "distill"):
        return
    if verb == "distill":
        raise CliError(f"{path} is a training recipe (no distill: section); run it with `adapt train`")
    also = "" if verb == "train" else (f"; adapt {verb} scores a VLM, so give it a training recipe (the distillation's "
                                       "held-out cosine is in its output.dir's report.md)")
    raise CliError(f"{path} is a distillation recipe (it has a distill: section); run it with `adapt distill`{also}")


def _launch(cmd: list[str], env: dict[str, str]):
    """Start torchrun; on Linux it gets SIGTERM when this process dies, even by kill -9, and then stops its workers
    (orphaned, they trained on to the end, holding the run folder's lock)."""
    import subprocess

    return subprocess.Popen(cmd, env=env, preexec_fn=_sigterm_with_parent(os.getpid()) if sys.platform == "linux" else None)


def _sigterm_with_parent(parent: int):
    def arrange() -> None:  # runs in the child between fork and exec
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def _stop_launcher(launcher, stop: BaseException, timeout: float = 60.0) -> None:
    """Pass Ctrl-C or SIGTERM on to torchrun, which stops its workers (rank 0 says which checkpoint holds the run),
    and wait for it; past `timeout` (torchrun gives its workers 30 s before it kills them) it is killed."""
    import signal
    import subprocess

    try:
        launcher.send_signal(signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM)
        launcher.wait(timeout)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()


MAX_LABEL_BYTES = 200  # + "predictions_", "-q4_k_m", ".jsonl": within the 255-byte file name of common file systems


def _eval(args) -> int:
    from model.loading import moved_aside_note

    from .evaluate import COMPARISON_PNG, PREDICTIONS, plot_comparison, write_report
    from .recipe import load_recipe
    from .run_eval import check_eval_sources, eval_kinds, evaluate_model

    variant_flags = {name: getattr(args, flag) for name, flag in VARIANT_FLAGS.items()}
    for name, given in variant_flags.items():  # the command line alone: refused before any note on the models
        if given and args.runtime != name:
            raise CliError(f"--{VARIANT_FLAGS[name].replace('_', '-')} applies to --runtime {name}")
    recipe = load_recipe(args.recipe, args.overrides)
    _check_recipe_kind(recipe, args.recipe, "eval")
    models: dict[str, str] = {}
    for item in args.model:
        label, source = item.split("=", 1) if "=" in item else (Path(item).name, item)
        if not label.strip() or not source.strip():
            raise CliError(f"--model {item!r}: give LABEL=SOURCE (e.g. adapted=runs/x/final) or a SOURCE")
        if label in (".", "..") or any(c in label for c in "/\\") or not label.isprintable():
            # the label names files and folders under --out (predictions_<label>.jsonl, <runtime>/<label>)
            raise CliError(f"--model {item!r}: a label names files under --out, so it cannot be '.', '..' or hold "
                           "a slash or control character; give one, e.g. --model adapted=DIR")
        if len(label.encode("utf-8")) > MAX_LABEL_BYTES:  # predictions_<label>-<type>.jsonl must stay a file name
            raise CliError(f"--model {item[:40]!r}…: a label names files under --out (predictions_<label>.jsonl), so "
                           f"it can be at most {MAX_LABEL_BYTES} bytes (UTF-8), got {len(label.encode('utf-8'))}; give "
                           "a shorter one, e.g. --model adapted=DIR")
        if label in models:
            raise CliError(f"--model {item!r}: label {label!r} is used twice; give each model its own, "
                           "e.g. --model a=DIR1 --model b=DIR2")
        models[label] = source
    check_eval_sources(recipe)  # before a check of, or a note on, the models: the data is what the user fixes first
    if not models:
        models = {"base": recipe.model.source}
        final = Path(recipe.output.dir) / "final"
        if final.is_dir():
            models["adapted"] = str(final)
        elif (moved := moved_aside_note(final)) is not None:  # the run's model is there, under another name
            raise CliError(moved)
        else:
            # `adapt quickstart --field F` trains into train/ next to its copy of the recipe, whatever output.dir says
            quick = recipe.base_dir / "train" / "final"
            how = (f"the quick start's model is at {quick}: adapt eval {_q(args.recipe)} --model base="
                   f"{_q(recipe.model.source)} --model adapted={_q(quick)}" if quick.is_dir() else
                   f"train first: adapt train {_q(args.recipe)}, with the same overrides, or name a model: --model "
                   "adapted=DIR")
            print(f"note: no adapted model at {final}; scoring the base model only ({how})", file=sys.stderr)
    if args.model:  # a typo in the last --model must not wait until the others are scored
        from model.checkpoints.io import CheckpointError
        from model.loading import load_config

        for label, source in models.items():
            try:
                load_config(source)  # config only: no weights read, nothing fetched
            except CheckpointError as err:
                raise CliError(f"--model {label}={source}: {err}") from None
    out = args.out or Path(recipe.output.dir) / "eval"
    _check_out_folder(out)  # before any scoring
    progress = args.progress
    if args.runtime != "pytorch":
        # a type given twice is one run (its label, and export folder, would be the same)
        variants = list(dict.fromkeys(variant_flags.get(args.runtime) or [RUNTIMES[args.runtime].default_variant]))
        runs = {f"{label}-{v}": evaluate_model(recipe, source, f"{label}-{v}", out, progress, runtime=args.runtime,
                                               variant=v)
                for label, source in models.items() for v in variants}
    else:
        runs = {label: evaluate_model(recipe, source, label, out, progress) for label, source in models.items()}
    kinds = eval_kinds(recipe)
    _, md = write_report(out, runs, kinds)
    plot_comparison(runs, kinds, out / COMPARISON_PNG)
    print(md.read_text(encoding="utf-8"))
    # the report scrolls past in the terminal: say where it is kept, as train says where final/ is
    print(f"report: {md} (eval.json, {COMPARISON_PNG} and the predictions beside it)", file=sys.stderr)
    before, after = PREDICTIONS.split("{label}")
    earlier = sorted(p.name for p in out.glob(PREDICTIONS.format(label="*"))
                     if p.name.removeprefix(before).removesuffix(after) not in runs)
    if earlier:  # the report replaced an earlier one that covered them: say so rather than leave them unexplained
        print(f"note: {out} also holds {', '.join(earlier)} from an earlier evaluation, which this report "
              "(eval.md, eval.json, comparison.png) does not cover; give each evaluation its own --out to keep both "
              "reports", file=sys.stderr)
    return 0


def _quickstart(args) -> int:
    from .quickstart import FIELDS, quickstart

    named = [item for item in args.overrides if item in FIELDS]
    if named:  # `adapt quickstart medical` was refused as a malformed override, or with --data-only as "overrides"
        raise CliError(f"{named[0]!r} is a field, not a recipe override (KEY=VALUE): give it with --field {named[0]}")
    out = args.out or Path("runs/quickstart" if args.field == "landcover" else f"runs/quickstart-{args.field}")
    _check_out_folder(out)
    if args.data_only:
        from .quickstart import prepare_data

        if args.overrides:
            raise CliError("--data-only writes data only; recipe overrides apply to a full quick start")
        data = prepare_data(out, args.field, progress=args.progress, force=args.force)
        template = FIELDS[args.field][0]
        also = " (or adapt distill with distill_pocket-tiny.yaml, which reads the same data)" * (args.field == "landcover")
        print(f"data in {data}\nnext: adapt init {template} {_q(out)} (if not done), then adapt train "
              f"{_q(out / f'{template}.yaml')}{also}")
        return 0
    quickstart(out, args.overrides, progress=args.progress, field=args.field, force=args.force)
    return 0


def _validate(args) -> int:
    from .checkpointing import RunFolderForeign, check_run_folder
    from .recipe import load_recipe, recipe_warnings
    from .train import TrainingError, check_training_sources

    recipe = load_recipe(args.recipe, args.overrides)
    distill = type(recipe).__name__ == "DistillRecipe"
    if args.for_eval:  # what adapt eval refuses before loading a model
        from .run_eval import check_eval_sources

        _check_recipe_kind(recipe, args.recipe, "eval")
        check_eval_sources(recipe)
        print(recipe.to_yaml(), end="")
        for note in recipe_warnings(recipe, for_eval=True):
            print(f"note: {note}", file=sys.stderr)
        print(f"{args.recipe}: valid recipe {recipe.name!r} for adapt eval", file=sys.stderr)
        return 0
    try:  # a recipe that cannot train is not valid
        check_training_sources(recipe, "distill" if distill else "train")
    except TrainingError as err:
        if recipe.data.eval_sources:  # an eval-only recipe: say how to check it for what it serves
            raise TrainingError(f"{err}; to check a recipe for adapt eval only: adapt validate --eval "
                                f"{_q(args.recipe)}") from None
        raise
    parts_notes = [] if distill else _check_parts(recipe, args.recipe)
    print(recipe.to_yaml(), end="")
    for note in recipe_warnings(recipe) + parts_notes:
        print(f"note: {note}", file=sys.stderr)
    try:  # what adapt train / distill refuse as they start
        check_run_folder(recipe.output.dir, "distill" if distill else "train")
    except RunFolderForeign as err:
        print(f"note: adapt {'distill' if distill else 'train'} would stop: {err}", file=sys.stderr)
    if args.plan:
        _print_mixing_plan(recipe, distill)
    kind = "distillation recipe (adapt distill)" if distill else "recipe"
    print(f"{args.recipe}: valid {kind} {recipe.name!r}", file=sys.stderr)
    return 0


def _check_parts(recipe, path: Path) -> list[str]:
    """What `adapt train` refuses of the parts once the model has loaded (a misspelt LoRA target), checked on the
    model's skeleton from its config (`adapt.parts.check_recipe_parts`); its notes."""
    from .parts import PartsError, check_recipe_parts

    try:
        return check_recipe_parts(recipe)
    except PartsError as err:
        raise PartsError(f"{path}: {err}") from None


def _print_mixing_plan(recipe, distill: bool) -> None:
    """To stderr (stdout is the resolved YAML): the samples per source per epoch that `adapt train` (`distill`) would
    draw, made by the same `MixturePlan` from the records the sources hold, read as training reads them but without
    the model, so not yet measured against max_seq_length; a source that cannot be read or planned is a note."""
    from .data.mixture import MixturePlan, epoch_order_refusal, source_specs
    from .data.samples import DataError, SkipLog, read_source

    if not recipe.data.sources:
        return
    skips = SkipLog()
    try:
        specs = source_specs(recipe.data.sources)
        records = {spec.name: read_source(spec, skips) for spec in specs}
        text_only = {name: (sum(1 for r in rs if not r.images), len(rs)) for name, rs in records.items()}
        if distill:  # as adapt distill plans: a record without an image has nothing to distil
            records = {name: [r for r in rs if r.images] for name, rs in records.items()}
        plan = MixturePlan.from_sources(specs, records, recipe.mixing.general_ratio, recipe.mixing.epoch_size,
                                        recipe.mixing.seed)
    except (DataError, OSError) as exc:  # MissingDataError is an OSError
        print(f"note: no mixing plan: {exc}", file=sys.stderr)
        return
    print(plan.describe(), file=sys.stderr)
    verb = "distill" if distill else "train"
    left_out = ", ".join(f"{name}: {n} of {of}" for name, (n, of) in text_only.items() if n)
    if distill and left_out:  # neither skipped nor planned: said, so that the counts add up
        print(f"note: adapt distill trains on images only: it leaves out the text-only records ({left_out}), "
              "which the plan does not count", file=sys.stderr)
    if recipe.mixing.epoch_size is None:  # a given one is checked with the recipe's notes; this one the records size
        refusal = epoch_order_refusal(len(plan), 1 + recipe.training.num_workers)
        if refusal:
            print(f"note: on this machine adapt {verb} would stop: {refusal}", file=sys.stderr)
    if len(skips):
        try:
            skips.check({name: len(rs) for name, rs in records.items()}, recipe.data.max_bad_fraction)
            stop = None
        except DataError as exc:  # its message holds the skip table
            stop = exc
        print(f"note: reading skipped {len(skips)} record(s) (the plan counts the rest); adapt {verb} lists them "
              "in skips.md of its output dir" + ("" if stop else f":\n\n{skips.table()}\n"), file=sys.stderr)
        if stop:
            print(f"note: adapt {verb} would stop: {stop}", file=sys.stderr)
    if not distill:  # adapt distill plans from the records read, as here
        print("note: adapt train also drops records longer than training.max_seq_length, measured with the model's "
              "processor, which this plan does not load, so its counts may be lower", file=sys.stderr)


def _recipes(args) -> int:
    from .recipe import list_recipe_templates

    templates = list_recipe_templates()
    width = max((len(name) for name in templates), default=0)
    for name, description in templates.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _init(args) -> int:
    from .recipe import copy_recipe_template

    path = copy_recipe_template(args.name, args.dir)
    print(f"wrote {path}\nnext: edit it, then `adapt validate {_q(path)}`")
    return 0


# ---------------------------------------------------------------------- domain verbs: domains, convert
def _domain_verbs(verbs) -> None:
    domains = verbs.add_parser("domains", help="list the domain plugins: converters, tasks, readers",
                               description="List the domain plugins with their data-set converters and task "
                                           "scorers, and any plugin that failed to load.")
    domains.set_defaults(handler=_domains)

    convert = verbs.add_parser("convert", help="convert a public data set into InternVL chat JSONL", add_help=False,
                               description="Run domain DOMAIN's converter for DATASET on the raw files in --src, "
                                           "writing JSONL (and images) into --out; prints what was written and "
                                           "skipped. The help lists every data set's --option keys; `adapt convert "
                                           "DOMAIN DATASET --help` shows one.")
    convert.add_argument("-h", "--help", action=_ConvertHelp,
                         help="show this help and the data sets' options (after DOMAIN DATASET: that one's only)")
    convert.add_argument("domain", help="domain name (see `adapt domains`)")
    convert.add_argument("dataset", help="data-set name (see `adapt domains`)")
    convert.add_argument("--src", required=True, type=_path, help="folder with the downloaded raw data set")
    convert.add_argument("--out", required=True, type=_path, help="output folder")
    convert.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="converter option (repeatable); values are read as YAML: 3, true, [a, b]")
    convert.add_argument("--workers", type=int, default=None, metavar="N",
                         help="processes doing the per-record image work (decode, render, resize, encode); the "
                              "output is byte-identical to one worker (default 1; at most the CPU cores)")
    convert.add_argument("--force", action="store_true",
                         help="convert again even over split files edited since a conversion wrote them (refused "
                              "without it: the edits would be replaced)")
    convert.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    convert.set_defaults(handler=_convert)

    synth = verbs.add_parser("synthesize", help="write a domain's synthetic raw data (public layouts) for trying things out",
                             description="Run domain DOMAIN's synthetic-data generator into --out.")
    synth.add_argument("domain", help="domain name (see `adapt domains`)")
    synth.add_argument("--out", required=True, type=_path, help="output folder")
    synth.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="generator option (repeatable), e.g. seed=1; each domain's options: `adapt domains`")
    synth.add_argument("--force", action="store_true",
                       help="replace what the generator writes where --out already holds it (refused otherwise)")
    synth.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    synth.set_defaults(handler=_synthesize)


class _ConvertHelp(argparse.Action):
    """``-h`` of `adapt convert`: the usual help, then each data set's options (their defaults and the
    sentences of the converter's docstring that start with an option's name in single back-quotes). After
    ``DOMAIN [DATASET]`` only those."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            parser.print_help()
            print()
            print(convert_options_help(getattr(namespace, "domain", None), getattr(namespace, "dataset", None)))
            sys.stdout.flush()
        except BrokenPipeError:  # `adapt convert --help | head`: printed while parsing, outside main()'s handler
            _silence_stdout()
            parser.exit(141)
        parser.exit()


_OPTION_SENTENCE = re.compile(r"(?<![`\w])`(?P<name>[a-z_][a-z0-9_]*)`(?!`)(?:\s*\([^()]*\))?\s*:\s+")


def _plain(text: str) -> str:
    """reST markup -> plain text: ``:func:`~a.b`` -> ``b``, double and single back-quotes dropped."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1] if "~" in m.group(0) else m.group(1),
                  text)
    return text.replace("``", "").replace("`", "").strip()


def option_docs(fn) -> dict[str, str]:
    """Option name -> its sentence(s) in `fn`'s docstring, written as the option's name in single back-quotes,
    a colon, then text (up to the next such sentence or the paragraph's end)."""
    import inspect

    docs: dict[str, str] = {}
    for para in re.split(r"\n\s*\n", inspect.cleandoc(fn.__doc__ or "")):
        flat = " ".join(para.split())
        hits = list(_OPTION_SENTENCE.finditer(flat))
        for hit, nxt in zip(hits, [*hits[1:], None]):
            docs.setdefault(hit.group("name"), _plain(flat[hit.end(): nxt.start() if nxt else len(flat)]))
    return docs


def _cli_value(value) -> str:
    """A default as it would be typed after ``--option KEY=``: ``=stitched``, ``=false``, ``=[a, b]``; None: unset."""
    if value is None:
        return " (default: unset)"
    if isinstance(value, bool):
        return f"={str(value).lower()}"
    if isinstance(value, (list, tuple)):
        return "=[" + ", ".join(str(v) for v in value) + "]"
    return f"={value}" if value != "" else "=''"


def convert_options_help(domain: str | None = None, dataset: str | None = None, width: int = 100) -> str:
    """The ``--option`` keys of every converter (or of `domain` / `dataset`): default and description."""
    import inspect
    import textwrap

    from domains.base import DomainError, get_domain, list_domains

    lines = ["data sets and their options (--option KEY=VALUE; values are YAML):"]
    try:
        names = [domain] if domain else list_domains()
        plugins = [get_domain(n) for n in names]
    except DomainError as exc:
        return f"{lines[0]}\n  {exc}"
    for plugin in plugins:
        groups: dict[object, list[str]] = {}  # one entry per converter function (eurosat, aid, ... share one)
        for name in sorted(plugin.converters):
            if not dataset or name == dataset:
                fn = plugin.converters[name]
                try:
                    target = fn.resolve() if callable(getattr(fn, "resolve", None)) else fn
                except Exception as exc:  # noqa: BLE001 - a plugin's broken import must not hide the others
                    lines += ["", f"  {plugin.name} {name}: cannot be loaded ({type(exc).__name__}: {exc})"]
                    continue
                groups.setdefault(target, []).append(name)
        for target, datasets in groups.items():
            fixed = set(getattr(plugin.converters[datasets[0]], "fixed", ()))
            summary = _plain(" ".join(re.split(r"\.\s", inspect.getdoc(target) or "", maxsplit=1)[0].split()))
            summary = re.sub(r"\s*\((?:see [^()]*|[\w.]+)\)\s*\.?$", "", summary)
            lines += ["", f"  {plugin.name} {', '.join(datasets)}: {summary.rstrip('.')}"]
            try:
                params = list(inspect.signature(target).parameters.values())[2:]
            except (TypeError, ValueError):
                params = []
            docs = option_docs(target)
            for p in params:
                if (p.name in fixed or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                        or callable(p.default)):  # a Python callable cannot be given on the command line
                    continue
                head = f"    {p.name}" + ("" if p.default is p.empty else _cli_value(p.default))
                text = docs.get(p.name, "")
                lines.append(textwrap.fill(f"{head}: {text}" if text else head, width=width,
                                           subsequent_indent=" " * 8))
    if len(lines) == 1:
        lines.append(f"  no converter {dataset!r} in domain {domain!r}")
    return "\n".join(lines)


def _options(items: list[str], flag: str = "--option") -> dict:
    """``--option KEY=VALUE`` items -> {key: value}, values read as YAML (``3``, ``true``, ``[a, b]``); a key given
    twice is refused (which one was meant?)."""
    import yaml

    from .recipe import load_yaml_value

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{flag} {item!r} is not KEY=VALUE")
        if key.strip() in options:
            raise CliError(f"{flag} {key.strip()} is given twice; give each key once")
        try:  # alias bombs refused here: a converter expanding one (e.g. into its output key) would hang
            options[key.strip()] = load_yaml_value(value, f"{flag} {key.strip()}=…") if value.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise CliError(f"{flag} {item!r}: the value is not valid YAML ({problem}); quote it or fix it") from None
    return options


def _files_changed_since(folder: Path, since_ns: int) -> int:
    """How many files under `folder` were written, replaced or touched since `since_ns` (their inode change time:
    an output written again with its source's modification time still shows), symlinked folders not entered."""
    changed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                changed += os.lstat(os.path.join(dirpath, name)).st_ctime_ns >= since_ns
            except OSError:  # removed meanwhile
                pass
    return changed


def _check_out_folder(out: Path) -> None:
    """Refuse an --out that is, or lies under, a file before any work is done."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise CliError(f"--out {out}: {folder} is a file, not a folder; move it away or choose another --out")
            return


def _synthesize(args) -> int:
    from domains.base import get_domain

    options = _options(args.option)
    _check_out_folder(args.out)
    out, existed = Path(args.out), Path(args.out).exists()
    try:
        result = get_domain(args.domain).synthesize(args.out, show_progress=args.progress, force=args.force,
                                                    **options)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused option leaves no empty folder behind
        raise
    for name, path in (result.items() if isinstance(result, dict) else [("out", result)]):
        print(f"{name}: {path}")
    return 0


def _domains(args) -> int:
    from domains.base import discovery_errors, get_domain, list_domains, option_names

    for name in list_domains():
        plugin = get_domain(name)
        print(f"{name}: {plugin.description or '(no description)'}")
        print(f"  converters: {', '.join(sorted(plugin.converters)) or '—'}")
        print(f"  tasks:      {', '.join(sorted(plugin.metrics)) or '—'}")
        print(f"  readers:    {', '.join(sorted(plugin.readers)) or '—'}")
        if plugin.recipes:
            print(f"  recipes:    {', '.join(plugin.recipes)}")
        found = option_names(plugin.synthetic, positional=1) if plugin.synthetic else None
        if found is not None:
            names = [n for n in found[0] if n not in ("progress", "show_progress")]
            print(f"  synthesize: adapt synthesize {name} --out DIR" + (f" [--option KEY=VALUE]; options: "
                                                                       f"{', '.join(names)}" if names else ""))
    errors = discovery_errors()
    for label, message in sorted(errors.items()):
        print(f"failed to load {label}: {message}", file=sys.stderr)
    return 1 if errors and not list_domains() else 0


def _convert(args) -> int:
    from domains.base import WHOLE_FILE_REASONS, get_domain

    options = _options(args.option)
    if args.workers is not None:
        if "workers" in options:
            raise CliError(f"--workers {args.workers} and --option workers={options['workers']} both given; give one")
        if args.workers < 1:
            raise CliError(f"--workers {args.workers}: give 1 or more processes")
        options["workers"] = args.workers
    if "workers" in options:  # refused before anything is read or written, however it was typed (1e3, 64.0)
        from domains.parallel import check_workers

        options["workers"] = check_workers(options["workers"])
    plugin = get_domain(args.domain)  # unknown domain: DomainError naming the known ones
    if args.dataset not in plugin.converters:
        known = ", ".join(sorted(plugin.converters)) or "none yet"
        raise CliError(f"domain {args.domain!r} has no converter for data set {args.dataset!r} (known: {known})")
    if not args.src.exists():
        raise CliError(f"--src {args.src} does not exist")
    src, out = args.src.resolve(), args.out.resolve()
    if out == src or src in out.parents:
        raise CliError(f"--out {args.out} lies inside --src {args.src}: a conversion never writes into its source "
                       "(and would read its own output next time); choose a folder outside it")
    if src == out / "images" or (out / "images") in src.parents:
        raise CliError(f"--src {args.src} lies inside {args.out / 'images'}, the image folder of --out {args.out}: "
                       "the conversion would write its images into its own source; move the source data out of it "
                       "or choose another --out")
    _check_out_folder(args.out)
    if not args.force and args.out.is_dir():
        from domains.files import edited_outputs

        edited = edited_outputs(args.out)
        if edited:
            raise CliError(f"{', '.join(str(p) for p in edited)}: changed since a conversion wrote "
                           f"{'them' if len(edited) > 1 else 'it'}; converting again would replace the edits: move "
                           f"{'them' if len(edited) > 1 else 'it'} (or convert into another --out), or pass --force")
    started = time.time_ns()
    report = plugin.convert(args.dataset, args.src, args.out, show_progress=args.progress, **options)
    print(report.table())
    for split, path in sorted(report.outputs.items()):
        print(f"{split}: {path}")
    if report.written:
        changed = _files_changed_since(args.out, started)
        print(f"{args.out}: {changed} file(s) written or replaced" if changed or report.removed else
              f"{args.out}: nothing written; every output already held this conversion")
    if report.written == 0:
        raise CliError(f"nothing converted from {args.src}: no {args.dataset} sample was written (see the table "
                       f"above; earlier outputs are kept); check that --src holds the {args.dataset} layout and the "
                       "--option values")
    unread = sum(report.skipped.get(reason, 0) for reason in WHOLE_FILE_REASONS)
    if unread:  # a whole split's questions, say: the run is not what the user asked for, even if others converted
        raise CliError(f"{unread} annotation file(s) could not be read at all ({', '.join(WHOLE_FILE_REASONS)} "
                       "above); the samples of the other files were written, an output of the unread file's split "
                       "from an earlier run is kept as it was")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
