"""bench/sections.py: the machine named in every benchmark caption."""

import pytest

from bench.sections import cpu_name

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16

processor\t: 1
cpu family\t: 26
model\t\t: 2
model name\t: Other CPU
flags\t\t: fpu amx_bf16
"""


def test_cpu_name_tells_generations_apart_that_share_a_model_name():
    assert cpu_name(ZEN4) == "AMD EPYC, family 25 model 17, AVX-512 BF16"
    zen5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26", 1).replace("model\t\t: 17", "model\t\t: 2", 1)
    assert cpu_name(zen5) != cpu_name(ZEN4)


def test_cpu_name_without_x86_fields_is_the_model_name():
    arm = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nFeatures\t: fp asimd\n"
    assert cpu_name(arm) == "ARMv8 Processor rev 1 (v8l)"
    amx = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\ncpu family\t: 6\nmodel\t\t: 143\nflags\t\t: amx_bf16 avx512_bf16\n"
    assert cpu_name(amx) == "Intel(R) Xeon(R) Platinum, family 6 model 143, AMX-BF16 + AVX-512 BF16"


def test_machine_line_names_the_gpus_torch_sees(monkeypatch):
    import torch

    from bench.sections import machine_line

    assert ", no GPU; Python" in machine_line()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    line = machine_line()
    assert "2x NVIDIA H200 (CUDA 13.0); Python" in line and "no GPU" not in line


def test_command_line_names_every_option_that_differs_from_its_default():
    import argparse

    from bench.sections import command_line

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="a,b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--also", nargs="*", default=["x"])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--work", default=None)
    parser.add_argument("--write", action="store_true")
    parse = parser.parse_args
    assert command_line("bench/b.py", parser, parse(["--write"])) == "python bench/b.py --write"
    args = parse(["--repeats", "2", "--models", "a,b", "--also", "--variant", "n=k=v", "--variant", "m",
                  "--fresh", "--work", "/tmp/w x", "--write"])
    assert command_line("/abs/bench/b.py", parser, args, skip=("work",)) == \
        "python bench/b.py --repeats 2 --also --variant n=k=v --variant m --fresh --write"
    assert command_line("b.py", parser, parse(["--work", "/tmp/w x"])) == "python bench/b.py --work '/tmp/w x' --write"


def _capture(monkeypatch, module, name: str, captured: list, result="section"):
    def stub(*args, **kwargs):
        captured.append(args[-1])
        return result
    monkeypatch.setattr(module, name, stub)


@pytest.mark.parametrize("script, function, argv, expected", [
    ("bench_tiling", "run", ["--repeats", "2"], "python bench/bench_tiling.py --repeats 2 --write"),
    ("bench_tiling", "run", [], "python bench/bench_tiling.py --write"),
    ("bench_drivelm_convert", "run", ["--scenes", "1", "--frames", "2", "--repeats", "1"],
     "python bench/bench_drivelm_convert.py --scenes 1 --frames 2 --repeats 1 --write"),
    ("bench_convert", "run", ["--rs-n", "96", "--rs-size", "256", "--repeats", "2"],
     "python bench/bench_convert.py --rs-n 96 --repeats 2 --write"),
    ("bench_startup", "measure", ["--repeats", "1"], "python bench/bench_startup.py --repeats 1 --write"),
    ("bench_eval", "measure", ["--repeats", "1", "--also"], "python bench/bench_eval.py --repeats 1 --also --write"),
    ("bench_load", "measure", ["--models", "internvl2-1b", "--repeats", "1", "--work", "/tmp"],
     "python bench/bench_load.py --models internvl2-1b --repeats 1 --write"),
])
def test_section_command_is_the_invocation(monkeypatch, script, function, argv, expected):
    import importlib

    module = importlib.import_module(f"bench.{script}")
    captured: list = []
    _capture(monkeypatch, module, function, captured)
    module.main(argv)
    assert captured == [expected]


def test_llamacpp_section_names_the_options_and_only_the_models_measured(monkeypatch):
    from bench import bench_llamacpp

    run = {"image_encode_ms": 1.0, "prompt_tps": 10.0, "decode_tps": 5.0, "peak_rss_mib": 20.0,
           "weight_bytes_per_token": 1e6}
    monkeypatch.setattr(bench_llamacpp, "bandwidth_gbs", lambda threads: 10.0)
    monkeypatch.setattr(bench_llamacpp, "run_model", lambda name, threads, work: {"pytorch": run, "f16": run})
    monkeypatch.setattr(bench_llamacpp, "require_llama_cpp", lambda: None)  # what is measured is stubbed
    text = bench_llamacpp.table({"pocket-tiny": {"pytorch": run, "f16": run}}, 10.0, 1, (0.0, 0.0),
                                "python bench/bench_llamacpp.py --models pocket-tiny --threads 1 --write")
    assert "- Command: `python bench/bench_llamacpp.py --models pocket-tiny --threads 1 --write`" in text
    assert "for pocket-tiny." in text and "InternVL2-1B-shaped model" not in text
    captured: list = []
    _capture(monkeypatch, bench_llamacpp, "table", captured)
    bench_llamacpp.main(["--models", "pocket-tiny", "--threads", "1"])
    assert captured == ["python bench/bench_llamacpp.py --models pocket-tiny --threads 1 --write"]


def test_llamacpp_section_names_extra_buffer_types_when_the_run_used_them(monkeypatch):
    """`POCKET_LLAMA_EXTRA_BUFTS=1 python bench/bench_llamacpp.py --write` published its figures as measured
    "without its extra buffer types", under a command without the variable."""
    from bench import bench_llamacpp

    run = {"image_encode_ms": 1.0, "prompt_tps": 10.0, "decode_tps": 5.0, "peak_rss_mib": 20.0,
           "weight_bytes_per_token": 1e6}
    monkeypatch.setattr(bench_llamacpp, "bandwidth_gbs", lambda threads: 10.0)
    monkeypatch.setattr(bench_llamacpp, "run_model", lambda name, threads, work: {"pytorch": run, "f16": run})
    monkeypatch.setattr(bench_llamacpp, "require_llama_cpp", lambda: None)  # what is measured is stubbed
    monkeypatch.setenv("POCKET_LLAMA_EXTRA_BUFTS", "1")
    texts: list = []
    table = bench_llamacpp.table
    monkeypatch.setattr(bench_llamacpp, "table", lambda *a, **k: texts.append(table(*a, **k)) or texts[-1])
    bench_llamacpp.main(["--models", "pocket-tiny", "--threads", "1"])
    text = texts[0]
    assert "- Command: `POCKET_LLAMA_EXTRA_BUFTS=1 python bench/bench_llamacpp.py --models pocket-tiny --threads 1 " \
           "--write`" in text
    assert "without its extra buffer types" not in text and "with its extra buffer types" in text


def test_an_unknown_revision_to_compare_with_is_one_line(tmp_path):
    """`--before nonsense` (bench_startup, bench_eval, bench_load) ended in a CalledProcessError traceback from
    `git archive`, whose message hid git's own."""
    from bench.sections import unpack_revision

    with pytest.raises(SystemExit, match="no-such-revision-xyz"):
        unpack_revision("no-such-revision-xyz", tmp_path / "before")


def test_interleaved_medians_leave_out_the_warm_up_and_take_turns(monkeypatch):
    """The bench scripts' one timing loop: an untimed warm-up call of every side first, then the timed calls in
    turn, each side's median."""
    import types

    import bench.sections as sections

    now = [0.0]
    monkeypatch.setattr(sections, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    calls: list[str] = []

    def side(name: str, seconds: list[float]):
        def call():
            calls.append(name)
            now[0] += seconds.pop(0)
        return call

    medians = sections.interleaved_medians({"a": side("a", [50.0, 1.0, 3.0, 2.0]),
                                            "b": side("b", [40.0, 5.0, 6.0, 4.0])}, repeats=3)
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert medians == {"a": 2.0, "b": 5.0}  # the 50 s and 40 s first calls are not among them
    assert sections.median_seconds(side("c", [9.0, 4.0]), repeats=1) == 4.0
    with pytest.raises(ValueError, match="repeats=0"):
        sections.median_seconds(lambda: None, repeats=0)


def test_available_memory_is_adapts_reading_and_unknown_lets_a_run_through(monkeypatch):
    """bench_load and bench_real_sizes each parsed /proc/meminfo their own way (unknown: inf in one, nan in the
    other); both now ask bench.sections.available_gib, which reads adapt's one MemAvailable helper."""
    import adapt.data.mixture
    import bench.bench_load
    import bench.bench_real_sizes
    from bench.sections import available_gib

    assert not hasattr(bench.bench_load, "_available_gib") and not hasattr(bench.bench_real_sizes, "mem_available_gb")
    monkeypatch.setattr(adapt.data.mixture, "_available_memory", lambda: 3 * 2**30)
    assert available_gib() == 3.0
    monkeypatch.setattr(adapt.data.mixture, "_available_memory", lambda: None)
    assert available_gib() == float("inf")
