"""Published figures: every README table is a generated section, and a short run keeps their direction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from adapt.pretrain_tiny import RECIPE, check_prefix, record_path, weights_digest
from bench.reproduce import FIELDS, README, compare_weights, run_field, table
from bench.sections import read_section, write_section

SECTIONS = [*(f"reproduce:{name}" for name in FIELDS), "reproduce:pocket-tiny"]
# the short version CI runs: same data and seeds as `adapt quickstart`, a smaller budget
SHORT = ["training.max_steps=300", "eval.max_samples=40", "eval.max_new_tokens=16"]


@pytest.mark.parametrize("name", SECTIONS)
def test_readme_figures_are_generated_sections_that_name_their_command(name):
    body = read_section(README, name)
    command = f"python bench/reproduce.py {name.split(':')[1]} --write"
    assert "|" in body, f"README section {name} is empty: run {command}"
    assert command in body


def test_benchmarks_figures_are_a_generated_section():
    body = read_section(README.parent / "BENCHMARKS.md", "bench_tiling")
    assert "python bench/bench_tiling.py --write" in body and "| **" in body


# Generated sections whose figures no command writes yet (hand-copied from `adapt eval` runs): listed so that
# a new one fails below, and so that writing its generator means taking it off this list.
NOT_YET_GENERATED: set[str] = set()


def _sections(doc: Path) -> list[str]:
    return re.findall(r"<!-- (\S+):start -->", doc.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc, name", [(doc, name) for doc in (README, README.parent / "BENCHMARKS.md")
                                       for name in _sections(doc)], ids=lambda v: getattr(v, "name", v))
def test_every_generated_section_names_the_bench_command_that_writes_it(doc, name):
    """Every figure section of README.md / BENCHMARKS.md names a `python bench/SCRIPT.py ... --write` command,
    and that script exists and writes this section (its name is in the script)."""
    body = read_section(doc, name)
    scripts = re.findall(r"`python (bench/\w+\.py)[^`]*--write[^`]*`", body)
    writers = [s for s in scripts if (README.parent / s).is_file()
               and re.search(rf"[\"']{re.escape(name.split(':')[0])}[\"':]", (README.parent / s).read_text(encoding="utf-8"))]
    if name in NOT_YET_GENERATED:
        assert not writers, f"{name} is generated now ({writers}): take it off NOT_YET_GENERATED"
        return
    assert scripts, f"{doc.name} section {name} names no `python bench/... --write` command"
    assert writers, f"{doc.name} section {name}: none of {scripts} writes it"


def test_write_section_replaces_only_its_own_text(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- a:start -->\nold\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkeep\n<!-- b:end -->\n")
    write_section(doc, "a", "| new |")
    assert doc.read_text() == "intro\n<!-- a:start -->\n| new |\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkeep\n<!-- b:end -->\n"
    assert read_section(doc, "b") == "keep"
    with pytest.raises(ValueError, match="c:start"):
        write_section(doc, "c", "x")


def test_export_accuracy_compares_answer_by_answer_and_marks_changes():
    from bench import export_accuracy as ea

    def pred(line, answer, source="landcover"):
        return {"source": source, "line": line, "prediction": answer}

    reference = [pred(1, "forest"), pred(2, "snow"), pred(1, "4", "general")]
    same = ea.compare(reference, list(reversed(reference)))
    assert (same["identical"], same["total"], same["different"]) == (3, 3, [])
    moved = ea.compare(reference, [pred(1, "forest"), pred(2, "Snow"), pred(3, "4", "general")])
    assert (moved["identical"], moved["different"]) == (1, [("landcover", 2), ("general", 1)])  # missing counts
    assert [ea.points(v, 0.96) for v in (0.96, 0.97, 0.955, None)] == ["±0.0", "+1.0", "-0.5", "–"]
    pytorch = {"domain": 0.685, "general": 0.96}
    rows = [{"variant": "fp32", "size_mb": 8.04, "domain": 0.685, "general": 0.96, "identical": 400, "total": 400},
            {"variant": "int8", "size_mb": 3.66, "domain": 0.685, "general": 0.965, "identical": 389, "total": 400}]
    assert ea.table("onnx", pytorch, rows, "landcover").splitlines()[2:] == [
        "| PyTorch (float32) | — | 0.685 | 0.960 | — |",
        "| ONNX Runtime fp32 | 8.0 MB | 0.685 | 0.960 | 400 of 400 |",
        "| ONNX Runtime int8 | 3.7 MB | 0.685 (±0.0) | 0.965 (+0.5) | 389 of 400 |"]
    assert ea.largest_change(pytorch, rows[1]) == 0.5
    assert ea._command(["onnx"]) == "python bench/export_accuracy.py --runtimes onnx --write"


@pytest.mark.slow
def test_short_quickstart_keeps_the_direction_of_the_published_figures(tmp_path):
    spec = FIELDS["landcover"]
    results = run_field(spec, tmp_path, SHORT)
    replay, no_replay = (results[v.label] for v in spec.variants)

    def score(summary: dict, group: str) -> float:
        return summary["groups"][group]["main"]

    base = results["base"]
    assert score(replay, "domain") > score(base, "domain")
    assert score(no_replay, "domain") > score(base, "domain")
    assert score(replay, "general") > score(no_replay, "general")  # replay is what keeps the general skills
    section = table(spec, results, SHORT)
    assert section.count("\n| ") >= 3 and " ".join(SHORT) in section


def test_shipped_pocket_tiny_is_the_recorded_run():
    record = json.loads(record_path().read_text())
    assert weights_digest(record_path().parent / "model.safetensors") == record["weights_sha256"], (
        "model/assets/pocket-tiny/model.safetensors is not the run rebuild.json records: "
        "python -m adapt.pretrain_tiny --install")
    assert record["general_accuracy"] >= 0.9 and len(record["prefix_losses"]) >= 10


def test_pocket_tiny_pretraining_keeps_the_optimizer_it_was_recorded_with():
    """The shipped weights were made with torch's per-op AdamW; the fused kernel rounds differently, so over 5,000
    steps a rebuild with it would no longer be the shipped weights bit for bit (the 50-step prefix check cannot see
    a difference that small)."""
    assert yaml.safe_load(RECIPE.format(steps=5000, lr=1e-3))["training"]["fused_adamw"] is False


@pytest.mark.slow
def test_pocket_tiny_still_rebuilds_its_first_steps(tmp_path):
    problems = check_prefix(tmp_path)
    assert not problems, ("pocket-tiny's recorded pre-training no longer replays: " + "; ".join(problems)
                          + ". If meant, rebuild it: python -m adapt.pretrain_tiny --install")


def test_weights_digest_sees_values_names_and_dtypes(tmp_path):
    import torch
    from safetensors.torch import save_file

    def digest(tensors: dict) -> str:
        path = tmp_path / "w.safetensors"
        save_file(tensors, str(path))
        return weights_digest(path)

    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = digest({"x": a})
    assert base == digest({"x": a.clone()})
    assert base != digest({"x": a + 1e-6})
    assert base != digest({"y": a})
    assert base != digest({"x": a.reshape(3, 2)})
    assert base != digest({"x": a.double()})
    assert Path(record_path()).name == "rebuild.json"


def test_a_different_rebuild_says_how_different(tmp_path):
    """The rebuild section's verdict when the bits differ: identical tensors counted, the largest difference."""
    import torch
    from safetensors.torch import save_file

    shipped = {"a": torch.zeros(3), "b": torch.ones(2, 2), "c": torch.arange(4.0)}
    rebuilt = {"a": torch.zeros(3), "b": torch.ones(2, 2) + torch.tensor([[0.0, 0.25], [0.0, 0.0]]),
               "c": torch.arange(4.0) - 1}
    save_file(shipped, tmp_path / "shipped.safetensors")
    save_file(rebuilt, tmp_path / "rebuilt.safetensors")
    assert compare_weights(tmp_path / "shipped.safetensors", tmp_path / "rebuilt.safetensors") == (1, 3, 1.0)
    assert compare_weights(tmp_path / "shipped.safetensors", tmp_path / "shipped.safetensors") == (3, 3, 0.0)
