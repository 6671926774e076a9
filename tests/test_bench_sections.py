"""bench/sections.py: the machine named in every benchmark caption."""

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
