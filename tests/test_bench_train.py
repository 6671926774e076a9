"""bench/bench_train.py: its three runners (adapt train, a plain PyTorch loop, a transformers Trainer) train on the
same samples and tokens per step, and the plain loop computes adapt train's loss (same weights, same batch, fp32).
No timing is asserted here: speed figures live in BENCHMARKS.md (section train-throughput)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_train as bench
from bench.sections import read_section

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-train")
    data = bench.prepare_data(work / "data", n_train=24, n_test=4)
    # steps=0 timed: the 2 warm-up steps only, micro-batches of 2 samples, 2 per optimizer step
    setup = bench.make_setup("pocket-tiny", work, data, steps=0, batch_size=2, grad_accum=2)
    # the bench runs each in a fresh process (run_in_child); two of them here go that way too
    return {"adapt": bench.run_adapt(setup, "fp32"), "plain": bench.run_in_child(setup, "plain", "fp32", {}),
            "hf": bench.run_in_child(setup, "hf", "fp32", {}),
            "packed": bench.run_adapt(setup, "fp32", ["training.packing=true"], name="packed"), "setup": setup}


KEYS = ("rows", "supervised", "tokens", "positions")


def test_runners_see_the_same_samples_and_tokens_every_step(runs):
    adapt = [{k: s[k] for k in KEYS} for s in runs["adapt"]["steps"]]
    assert len(adapt) == bench.WARMUP and all(s["rows"] == 4 and s["supervised"] > 0 for s in adapt)
    for name in ("plain", "hf"):
        assert [{k: s[k] for k in KEYS} for s in runs[name]["steps"]] == adapt, name
    # the Trainer's own count of the step's supervised tokens (what its loss is divided by) is ours
    items = runs["hf"]["num_items"]
    assert items[::2] == items[1::2] == [s["supervised"] for s in adapt]


def test_packed_runs_count_samples_not_rows(runs):
    """training.packing puts several samples in a row: samples/s counts samples, tokens/s the non-padding tokens."""
    adapt = [{k: s[k] for k in KEYS} for s in runs["adapt"]["steps"]]
    packed = [{k: s[k] for k in KEYS} for s in runs["packed"]["steps"]]
    assert [(s["rows"], s["supervised"], s["tokens"]) for s in packed] == \
        [(s["rows"], s["supervised"], s["tokens"]) for s in adapt]
    assert all(p["positions"] <= a["positions"] for p, a in zip(packed, adapt))


def test_plain_loop_and_trainer_reach_adapt_trains_loss(runs):
    first = runs["adapt"]["steps"][0]["loss"]
    assert abs(runs["plain"]["steps"][0]["loss"] - first) < 1e-5
    assert abs(runs["hf"]["steps"][0]["loss"] - first) < 1e-5
    # after one identical update the second step's loss still agrees (same optimizer, schedule and clipping)
    second = runs["adapt"]["steps"][1]["loss"]
    assert abs(runs["plain"]["steps"][1]["loss"] - second) < 1e-4
    assert abs(runs["hf"]["steps"][1]["loss"] - second) < 1e-4


def test_the_trainer_runner_uses_the_adamw_trainer_builds_and_the_plain_loop_torchs_default(runs, tmp_path):
    """A Trainer script that names no optimizer gets `TrainingArguments`' default (fused AdamW from torch 2.8 on):
    the Trainer runner must be that script, not one handicapped with the slower per-tensor kernel."""
    from transformers import Trainer, TrainingArguments

    _, kwargs = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=str(tmp_path), use_cpu=True))
    kwargs.pop("lr")
    hf = runs["hf"]["optimizer"]
    assert {k: hf[k] for k in kwargs} == {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    assert kwargs.get("fused") is True  # torch 2.13 + transformers 5: the fused kernel is the default
    plain = runs["plain"]["optimizer"]
    assert not plain["fused"] and plain["betas"] == hf["betas"] and plain["eps"] == hf["eps"]


def test_benchmarks_section_names_its_command():
    body = read_section(ROOT / "BENCHMARKS.md", bench.SECTION)
    assert "## Training throughput" in body
    assert "python bench/bench_train.py" in body and "--write" in body
    assert "### pocket-tiny" in body
    assert "| fp32 | adapt train |" in body and "| fp32 | transformers Trainer |" in body


def test_a_labelled_block_sits_beside_the_model_s_block_and_replaces_only_its_own_label():
    old = bench.section_text({"pocket-tiny": "### pocket-tiny\ntiny", "mid": "### mid\nfirst machine"})
    text = bench.section_text({bench.block_name("mid", "second machine"): "### mid (second machine)\nzen 4"}, old)
    assert "first machine" in text and "zen 4" in text  # the unlabelled block is kept
    assert text.index("### pocket-tiny") < text.index("### mid\n") < text.index("### mid (second machine)")
    again = bench.section_text({"mid (second machine)": "### mid (second machine)\nrerun"}, text)
    assert "zen 4" not in again and "rerun" in again and "first machine" in again


def test_an_env_variant_runs_in_its_own_process_with_that_environment(runs, tmp_path):
    """`--adapt-variant NAME=env:KEY=VALUE`: here the allocator opt-out, seen by that run only."""
    import sys

    work = tmp_path / "w"
    data = bench.prepare_data(work / "data", n_train=8, n_test=2)
    setup = bench.make_setup("pocket-tiny", work, data, steps=0, batch_size=2, grad_accum=1)
    variants = bench.parse_variants(["sysmalloc=env:POCKET_ADAPT_KEEP_FREED_MEMORY=0"])
    assert bench.run_in_child(setup, "adapt:sysmalloc", "fp32", variants)["kept_freed_memory"] is False
    assert runs["adapt"]["kept_freed_memory"] is sys.platform.startswith("linux")


def test_runners_with_data_loader_workers_see_the_same_samples_and_loss(runs, tmp_path):
    """--workers: every runner's DataLoader forks workers, also in the bench's spawned run processes."""
    setup = bench.make_setup("pocket-tiny", tmp_path, runs["setup"].work / "data", steps=0, batch_size=2,
                             grad_accum=2, workers=1)
    assert "training.num_workers=1" in setup.base
    adapt = [{k: s[k] for k in KEYS} for s in runs["adapt"]["steps"]]
    for name in ("plain", "hf", "adapt"):
        run = bench.run_in_child(setup, name, "fp32", {})
        assert [{k: s[k] for k in KEYS} for s in run["steps"]] == adapt, name
        assert abs(run["steps"][0]["loss"] - runs["adapt"]["steps"][0]["loss"]) < 1e-5, name


def test_a_gpu_block_reports_wall_rates_mfu_against_the_bf16_peak_and_gpu_memory():
    from types import SimpleNamespace

    def result(samples_s, peak_gb):
        return {"samples_s": samples_s, "samples_s_all": [samples_s], "supervised_s": 10 * samples_s,
                "tokens_s": 300 * samples_s, "positions_s": 100.0 * samples_s / 2, "wall_s": 30.0, "setup_s": 10.0,
                "after_s": 5.0, "gpu_peak_gb": peak_gb, "losses": [2.0, 1.0]}

    results = {"adapt|bf16": result(4.0, 20.0), "plain|bf16": result(3.0, 30.0), "hf|bf16": result(2.0, 40.0)}
    flops = {"params": 938e6, "trainable": 630e6, "flops_step": 1e12, "positions": 1000, "per_position": 1e9}
    args = SimpleNamespace(label="NVIDIA H200", batch_size=32, grad_accum=1, steps=8, repeats=2, workers=4,
                           threads=8, device="cuda")
    block = bench.model_block("internvl2-1b", results, flops, {"fp32": 5e4, "bf16": 1e3}, (0.0, 0.0), "CMD", args)
    assert block.startswith("### internvl2-1b (NVIDIA H200)")
    adapt = next(line for line in block.splitlines() if line.startswith("| bf16 | adapt train |"))
    # 1e9 FLOP per position x 200 positions/s = 0.2 TFLOP/s; over a 1 TFLOP/s bf16 peak: 20 % MFU
    assert "| **2.00x** | 1.33x | 0.2 | 20.0 % | 20.0 | 1.5000 |" in adapt
    assert "GFLOP per CPU-s" not in block and "4 data-loader worker(s)" in block


def test_profile_writes_the_timed_steps_operators(runs, tmp_path):
    setup = bench.make_setup("pocket-tiny", tmp_path, runs["setup"].work / "data", steps=1, batch_size=2, grad_accum=1)
    setup.profile = str(tmp_path / "profile")
    bench.run_adapt(setup, "fp32")
    text = (tmp_path / "profile" / "adapt-fp32.txt").read_text()
    assert text.startswith("timed steps profiled: 1; wall per step") and "aten::mm" in text


def test_the_published_command_reproduces_a_cpu_run_of_a_gpu_model():
    """A CPU run of internvl2-1b published with --allow-cpu named a command without it, which then refused to
    --write; variant values were not quoted for a shell."""
    import argparse
    import shlex

    args = argparse.Namespace(models="internvl2-1b", precision="bf16", steps=1, batch_size=2, grad_accum=1,
                              repeats=1, threads=2, max_seq_length=None, workers=0, label="my laptop",
                              adapt_variant=["note=logging.every=5,output.dir=a b"], allow_cpu=True)
    words = shlex.split(bench.published_command(args))
    assert "--allow-cpu" in words and words[words.index("--label") + 1] == "my laptop"
    assert words[words.index("--adapt-variant") + 1] == "note=logging.every=5,output.dir=a b"


def test_the_published_description_is_the_one_the_script_writes():
    """The section's description says how the figures were taken (for two repeats the "median run" is the faster
    one, while the CPU columns are the median over both runs): BENCHMARKS.md must carry the script's own text."""
    body = read_section(ROOT / "BENCHMARKS.md", bench.SECTION)
    assert bench.INTRO in body
    assert "of an even number the faster of the middle two" in bench.INTRO


def test_precisions_take_turns_as_the_runners_do(monkeypatch):
    """All fp32 runs came before all bf16 runs, so drift in machine load went into the bf16 / fp32 ratio."""
    order = []

    def run_in_child(setup, runner, precision, variants):
        order.append((precision, runner))
        step = {"rows": 2, "supervised": 10, "tokens": 20, "positions": 24, "time": 1.0, "cpu": 1.0, "loss": 1.0}
        return {"steps": [step] * (bench.WARMUP + 1)}

    monkeypatch.setattr(bench, "run_in_child", run_in_child)
    results = bench.measure_model(bench.Setup("pocket-tiny", Path("."), Path("r.yaml"), []),
                                  ["fp32", "bf16"], 2, {})
    one_round = [(p, r) for p in ("fp32", "bf16") for r in bench.RUNNERS]
    assert order == one_round * 2
    assert list(results) == [f"{r}|{p}" for p, r in one_round]
