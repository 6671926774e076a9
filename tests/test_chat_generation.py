"""`adapt chat`'s generation options as a user gives them, and the sampling they lead to."""

from __future__ import annotations

import pytest

from adapt.cli import MAX_SEED, build_parser


@pytest.mark.parametrize("seed", ["-1", str(MAX_SEED + 1), "99999999999999999999999"])
def test_a_seed_no_runtime_reads_alike_is_a_usage_error(seed, capsys):
    """A negative seed (numpy refuses it), one above 2**64 (torch.manual_seed's traceback after the model had loaded)
    or above 32 bits (llama.cpp's helper wraps it onto another seed's draw) is a usage error naming --seed."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["chat", "--seed", seed])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and f"0 to {MAX_SEED}" in err and "Traceback" not in err


def test_every_seed_in_range_is_taken():
    assert [build_parser().parse_args(["chat", "--seed", s]).seed for s in ("0", str(MAX_SEED))] == [0, MAX_SEED]
