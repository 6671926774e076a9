"""POCKET_LLAMA_THREADS, the threads llama.cpp runs with (`deploy.llamacpp.threads`)."""

import pytest

import deploy.llamacpp as llamacpp
from deploy.llamacpp import LlamaCppError


@pytest.mark.parametrize("given", ["four", "0", "-2"])
def test_a_thread_count_that_is_no_count_names_the_variable(given, monkeypatch):
    """POCKET_LLAMA_THREADS=four was a raw int() traceback; 0 or -2 went to llama.cpp as the thread count."""
    monkeypatch.setenv("POCKET_LLAMA_THREADS", given)
    with pytest.raises(LlamaCppError, match=rf"POCKET_LLAMA_THREADS='{given}': give a number of threads"):
        llamacpp.threads()
    monkeypatch.setenv("POCKET_LLAMA_THREADS", "3")
    assert llamacpp.threads() == 3
