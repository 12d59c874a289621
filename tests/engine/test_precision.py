"""--dtype auto: the decision from injected hardware facts (no timing is asserted)."""

import pytest

from solo_cli.engine import precision
from solo_cli.engine.precision import Hardware, Precision, choose, cpu_flags, resolve_precision


def never_measured() -> float:
    raise AssertionError("the calibration must not run here")


def test_cuda_with_native_bf16_trains_in_bf16_and_without_it_in_float32():
    assert choose(Hardware("cuda", cuda_bf16=True), never_measured).dtype == "bfloat16"
    fp32 = choose(Hardware("cuda", cuda_bf16=False), never_measured)
    assert fp32.dtype == "float32" and "no native bf16" in fp32.reason


def test_mps_and_other_devices_stay_float32():
    for kind in ("mps", "xpu"):
        assert choose(Hardware(kind), never_measured) == Precision("float32", f"float32: bf16 is not used on {kind}")


def test_cpu_without_native_bf16_is_float32_without_measuring():
    plain = Hardware("cpu", cpu_flags=frozenset({"avx2", "avx512f", "avx512_fp16"}), cpu_capability="AVX512")
    result = choose(plain, never_measured)
    assert result.dtype == "float32" and "no native bf16" in result.reason


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}, {"bf16", "asimd"}])
def test_cpu_with_native_bf16_follows_the_measurement(flags):
    cpu = Hardware("cpu", cpu_flags=frozenset(flags), cpu_capability="AVX512")
    slower = choose(cpu, lambda: 0.55)  # AVX512-BF16 without AMX: what this project's 2-core Xeon measures
    assert slower.dtype == "float32" and "bf16 measured 0.55x of float32 on this CPU" in slower.reason
    faster = choose(cpu, lambda: 2.5)
    assert faster.dtype == "bfloat16" and "bf16 measured 2.50x" in faster.reason
    assert choose(cpu, lambda: 1.1).dtype == "float32"  # a small gain is not worth bf16's rounding


def test_torch_reporting_amx_counts_as_native_without_cpuinfo():
    assert choose(Hardware("cpu", cpu_capability="AMX"), lambda: 3.0).dtype == "bfloat16"


def test_explicit_dtypes_are_kept_and_never_probe(monkeypatch):
    monkeypatch.setattr(precision, "detect", lambda device: pytest.fail("an explicit dtype must not probe the hardware"))
    for name in ("float32", "bfloat16", "float16"):
        assert resolve_precision(name).dtype == name


def test_auto_resolves_through_detect_and_the_cached_calibration(monkeypatch):
    monkeypatch.delenv("SOLO_AUTO_DTYPE", raising=False)  # the suite pins auto; this test is about unpinned auto
    monkeypatch.setattr(precision, "detect", lambda device: Hardware("cpu", cpu_flags=frozenset({"avx512_bf16"})))
    monkeypatch.setattr(precision, "calibrate_cpu", lambda: 1.6)
    assert resolve_precision("auto", "cpu") == Precision(
        "bfloat16", "bfloat16: bf16 measured 1.60x of float32 on this CPU (avx512_bf16)"
    )


def test_cpuinfo_flags_are_read_on_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n")
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags(x86)
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_solo_auto_dtype_pins_what_auto_means(monkeypatch):
    from solo_cli.engine import precision
    from solo_cli.errors import UsageError

    monkeypatch.setattr(precision, "calibrate_cpu", lambda: pytest.fail("a pinned auto measures nothing"))
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "bfloat16")
    assert precision.resolve_precision("auto", "cpu") == precision.Precision("bfloat16", "bfloat16: SOLO_AUTO_DTYPE pins auto")
    assert precision.resolve_precision("float32", "cpu").dtype == "float32"  # an explicit --dtype wins
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "fp8")
    with pytest.raises(UsageError, match="SOLO_AUTO_DTYPE=fp8: use float32, bfloat16 or float16"):
        precision.resolve_precision("auto", "cpu")


def test_one_decision_holds_loss_scaling_and_autocast(monkeypatch):
    """float16 weights scale the loss however float16 was reached; float32 autocasts only on native-bf16 CUDA."""
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "float16")
    pinned = resolve_precision("auto", "cpu")
    assert (pinned.dtype, pinned.grad_scaler, pinned.autocast) == ("float16", True, None)
    assert resolve_precision("float16", "cpu").grad_scaler
    assert not resolve_precision("bfloat16", "cuda", hardware=Hardware("cuda", cuda_bf16=True)).grad_scaler
    assert resolve_precision("float32", "cuda", hardware=Hardware("cuda", cuda_bf16=False)).autocast is None
    assert resolve_precision("float32", "cuda", hardware=Hardware("cuda", cuda_bf16=True)).autocast == "bfloat16"
    assert resolve_precision("float32", "cpu").autocast is None


def test_under_a_distributed_launch_the_first_process_decides_auto(monkeypatch):
    from solo_cli.engine.precision import Agreement

    monkeypatch.delenv("SOLO_AUTO_DTYPE", raising=False)
    monkeypatch.setattr(precision, "calibrate_cpu", lambda: 2.0)
    native = Hardware("cpu", cpu_flags=frozenset({"amx_bf16"}))
    sent = []

    def total(value):  # rank 0 sends its choice, every other process 0: the sum is rank 0's choice
        sent.append(value)
        return 2.0

    first = resolve_precision("auto", "cpu", hardware=native, agreement=Agreement(True, total))
    other = resolve_precision("auto", "cpu", hardware=Hardware("cpu"), agreement=Agreement(False, total))
    assert first.dtype == other.dtype == "bfloat16" and sent == [2.0, 0.0]
    assert "first process" in other.reason
