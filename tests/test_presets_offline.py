"""Public-model presets without network: `adapt inspect` describes them from their config, and a load that needs
the hub says which hub id and how to pass a local folder instead (issue 16 item 3)."""

from __future__ import annotations

import re
import socket

import pytest
from huggingface_hub import constants

import model
from adapt.cli import main
from model.checkpoints.io import CheckpointError
from model.presets import PRESETS, preset_config


class _NetworkBlocked:
    """Every way out of the process (name lookup, connect) raises, as on a machine without network; `attempts`
    lists what was tried."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.attempts: list[str] = []
        monkeypatch.setattr(socket, "getaddrinfo", self._refuse("getaddrinfo"))
        monkeypatch.setattr(socket, "create_connection", self._refuse("create_connection"))
        monkeypatch.setattr(socket.socket, "connect", self._refuse("connect"))
        monkeypatch.setattr(socket.socket, "connect_ex", self._refuse("connect_ex"))

    def _refuse(self, name: str):
        def refuse(*args, **kwargs):
            self.attempts.append(f"{name}{args[-1:] if args else ''}")
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network blocked by the test)")

        return refuse


@pytest.fixture
def no_network(monkeypatch, tmp_path) -> _NetworkBlocked:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))  # no cached copy either
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return _NetworkBlocked(monkeypatch)


@pytest.mark.parametrize("name", ["internvl2-1b", "mini-internvl-4b", "mobilevlm-v2-1.7b"])
def test_inspect_describes_a_hub_preset_without_weights_or_network(name, no_network, capsys) -> None:
    assert main(["inspect", "--model", name]) == 0
    assert no_network.attempts == []  # nothing tried the hub
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    config = preset_config(name)
    assert PRESETS[name].hub_id in rows["source"] and "--model DIR" in rows["source"]
    parts = [int(rows[part].split("(")[1].split(" params")[0].replace(",", ""))
             for part in ("vision tower", "projector", "language model")]
    assert all(n > 0 for n in parts) and int(rows["parameters"].replace(",", "")) == sum(parts)
    assert rows["image tokens"].startswith(f"{config.image_seq_length} per ")
    assert f"max_tiles={config.tiling['max_tiles']}" in rows["tiling"]


def test_inspect_counts_the_public_internvl2_1b(no_network, capsys) -> None:
    # InternVL2-1B's published size: 938,158,976 parameters (InternViT-300M 304.0 M + MLP 4.5 M + Qwen2-0.5B 629.7 M)
    assert main(["inspect", "--model", "internvl2-1b"]) == 0
    assert "parameters      938,158,976" in capsys.readouterr().out


def test_preset_load_without_network_names_the_hub_id_and_the_local_folder_way(no_network, capsys) -> None:
    with pytest.raises(CheckpointError) as caught:
        model.load("internvl2-1b")
    message = str(caught.value)
    assert no_network.attempts  # the hub client's traffic goes through the blocked calls, so the test above means it
    assert "OpenGVLab/InternVL2-1B" in message and "--model DIR" in message and "not reachable" in message
    assert "\n" not in message

    assert main(["chat", "--model", "internvl2-1b", "hello"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adapt chat: error: preset internvl2-1b needs the weights of OpenGVLab/InternVL2-1B")
    assert "\n" not in err and "Traceback" not in err


def test_preset_load_with_hf_hub_offline_says_so_without_trying(no_network, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"mini-internvl-4b needs the weights of OpenGVLab/InternVL2-4B .*"
                                              r"HF_HUB_OFFLINE is set .*--model DIR; in a recipe, model.source: DIR"):
        model.load("mini-internvl-4b")
    assert no_network.attempts == []


def test_a_hub_tower_without_network_names_the_hub_id_and_the_local_folder_way(no_network) -> None:
    """A recipe's `hub:OWNER/NAME` vision tower (the distillation teacher, model.vision) failed offline with the hub
    client's own LocalEntryNotFoundError; it now says what a preset says."""
    from model.checkpoints.tower import load_vision

    with pytest.raises(CheckpointError, match=r"^vision tower hub:OpenGVLab/InternViT-300M-448px needs the weights of "
                                              r"OpenGVLab/InternViT-300M-448px .*hf download OpenGVLab/InternViT-300M-448px"
                                              r".*instead of hub:OpenGVLab/InternViT-300M-448px .*model.vision: DIR"):
        load_vision("hub:OpenGVLab/InternViT-300M-448px")


def test_a_preset_without_the_released_longrope_says_so() -> None:
    """Phi-3-mini-128k (mini-internvl-4b) is released with longrope scaling, which changes every position's
    rotation; a preset built with plain RoPE must say so where the presets are listed."""
    preset = PRESETS["mini-internvl-4b"]
    text = preset_config(preset.name).text_config
    assert text.max_position_embeddings == 131072 and text.original_max_position_embeddings == 4096
    if text.rope_parameters["rope_type"] != "longrope":
        assert "plain RoPE" in preset.description and "longrope" in preset.description
