"""argparse types of the command lines (`adapt` and `adapt demo`): a count, and the sampling settings checked as
`model.generation` checks them (`model.limits`' checks), each failure a usage error in words. Here, below both `adapt`
and `deploy`, so each command line takes the same types from one place; importing or using it loads no torch."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

from model.limits import check_seed, check_temperature, check_top_p


def positive_int(text: str, least: int = 1) -> int:
    """argparse type of a count: `least` (1) or more, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of a count where 0 means none (worker processes): 0 or more, else a usage error."""
    return positive_int(text, least=0)


def blank_flag(args: argparse.Namespace, flags: Iterable[str]) -> str | None:
    """The first of `flags` (argparse dest names; a repeatable flag's every value) given as empty text, as ``--flag``;
    None where none is. `--model "$UNSET"` would otherwise read as the flag left out: the default, without a word."""
    for flag in flags:
        values = getattr(args, flag, None)
        if any(isinstance(v, str) and not v.strip() for v in (values if isinstance(values, list) else [values])):
            return "--" + flag.replace("_", "-")
    return None


def _checked(convert: Callable[[str], object], check: Callable, what: str) -> Callable[[str], object]:
    """An argparse type: `convert` the text, then `check` it (one of `model.limits`' checks, which the demo's session
    and `generate`'s callers share), each failure an ArgumentTypeError in words."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            return check(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


# a sampling seed every runtime reads alike: 0 to MAX_SEED (numpy refuses a negative seed, torch one above 2**64,
# llama.cpp's helper keeps 32 bits)
sampling_seed = _checked(int, check_seed, "a whole number")
sampling_temperature = _checked(float, check_temperature, "a number")
sampling_top_p = _checked(float, check_top_p, "a number")
