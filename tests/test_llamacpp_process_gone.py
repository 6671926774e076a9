"""pocket-llama processes that are gone or fail to start again.

A process gone before a request (killed by the OOM killer while `adapt chat --interactive` waited for the next
question, crashed in an earlier one): writing the request raised a BrokenPipeError, which the command line takes for
its own stdout closed (`adapt chat | head`) and exits 141 without a word. It is now the LlamaCppError saying that
pocket-llama exited, with its status."""

import pytest

import deploy.llamacpp as llamacpp
from deploy.llamacpp import LlamaCppError, PocketLlama


def test_a_request_to_a_process_that_is_gone_says_it_exited(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pocket-llama"
    fake.write_text('#!/bin/sh\necho \'{"ready": true}\'\nread line\n')  # loads, then waits for a request
    fake.chmod(0o755)
    (bin_dir / "BUILD").write_text(llamacpp.expected_stamp())
    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path))
    with PocketLlama(tmp_path / "m.gguf", n_ctx=256) as llama:
        llama.proc.kill()
        llama.proc.wait()
        with pytest.raises(LlamaCppError, match=r"pocket-llama exited \(status -9\)"):
            llama.request(op="tokenize", text="hello")


def test_a_longer_context_that_cannot_be_opened_is_its_own_error(tmp_path, monkeypatch):
    """A prompt past the context reopens llama.cpp with a longer one; when that failed to load (no memory for its KV
    cache), the failed reopen had removed the scratch folder and the request's clean-up then raised
    FileNotFoundError over the LlamaCppError that said why."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pocket-llama"
    fake.write_text('#!/bin/sh\ncase "$*" in *"-c 256"*) ;; *) echo \'{"error": "cannot allocate the KV cache"}\'; '
                    'exit 1;; esac\necho \'{"ready": true}\'\nwhile read line; do echo \'{"error": "prompt of 300 '
                    'tokens does not fit the context of 256"}\'; done\n')
    fake.chmod(0o755)
    (bin_dir / "BUILD").write_text(llamacpp.expected_stamp())
    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path))
    with PocketLlama(tmp_path / "m.gguf", n_ctx=256, max_ctx=4096) as llama:
        with pytest.raises(LlamaCppError, match=r"with a context of 512: cannot allocate the KV cache"):
            llama.generate(16, messages=[{"role": "user", "content": "hi"}])
