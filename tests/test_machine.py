"""side_bench/machine.py: the CPU's model and speed flags read from /proc/cpuinfo, native bf16
and the fast precision decided from them, and what a row's ``device`` records."""

from __future__ import annotations

import torch

from side_bench import machine

# Trimmed copies of real /proc/cpuinfo texts (flags cut to a few around the ones that matter)
AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 fma f16c avx avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 fma f16c avx avx2 bmi2 sha_ni avx512_bf16
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fma f16c avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 vaes
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fma avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve i8mm bf16
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_the_first_processor_s_model_and_speed_flags_are_read():
    # the second processor's avx512_bf16 is not the first's: only the first is read
    assert machine.parse_cpuinfo(AVX2_ONLY) == {"model": "AMD EPYC 7B13", "flags": ["fma", "f16c", "avx2"]}
    assert machine.parse_cpuinfo(ZEN4)["flags"] == ["fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512vl",
                                                    "avx512_vnni", "avx512_bf16"]
    assert machine.parse_cpuinfo(GRAVITON3) == {"model": "Arm CPU part 0xd40",
                                                "flags": ["asimd", "asimdhp", "sve", "bf16", "i8mm"]}
    assert machine.parse_cpuinfo("") == {"model": None, "flags": []}


def test_native_bf16_is_amx_then_avx512_bf16_then_arm_bf16_else_none():
    flags = {text: machine.parse_cpuinfo(text)["flags"] for text in (AVX2_ONLY, ZEN4, SAPPHIRE_RAPIDS, GRAVITON3)}
    assert machine.native_bf16(flags[AVX2_ONLY]) is None  # bf16 would be emulated: fp32 stays the fast path
    assert machine.native_bf16(flags[ZEN4]) == "avx512_bf16"
    assert machine.native_bf16(flags[SAPPHIRE_RAPIDS]) == "amx_bf16"
    assert machine.native_bf16(flags[GRAVITON3]) == "bf16"


def test_this_machine_is_described_with_its_fast_precision():
    described = machine.describe("cpu")
    assert described["name"] == described["type"] == "cpu"
    assert described["model"] and described["cores"] >= 1
    assert described["threads"] == torch.get_num_threads()
    assert set(described["flags"]) <= set(machine.SPEED_FLAGS)
    assert described["native_bf16"] == machine.native_bf16(described["flags"])
    assert machine.fast_precision("cpu") == ("bf16" if described["native_bf16"] else "fp32")
