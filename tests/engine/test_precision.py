"""--dtype auto: the decision from injected hardware facts (no timing is asserted)."""

import json

import pytest

from solo_cli.engine import calibration, precision
from solo_cli.engine.calibration import Measurement
from solo_cli.engine.precision import Hardware, Precision, choose, cpu_flags, resolve_precision


def never_measured() -> Measurement:
    raise AssertionError("the calibration must not run here")


def measured(speedup: float):
    return lambda: Measurement(speedup, None, cached=False)


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
    slower = choose(cpu, measured(0.55))  # AVX512-BF16 without AMX: what this project's 2-core Xeon measures
    assert slower.dtype == "float32" and "matmul ran 0.55x as fast in bf16 as in float32" in slower.reason
    faster = choose(cpu, measured(2.5))
    assert faster.dtype == "bfloat16" and "matmul ran 2.50x as fast in bf16" in faster.reason
    assert choose(cpu, measured(1.1)).dtype == "float32"  # a small gain is not worth bf16's rounding


def test_torch_reporting_amx_counts_as_native_without_cpuinfo():
    assert choose(Hardware("cpu", cpu_capability="AMX"), measured(3.0)).dtype == "bfloat16"


def test_explicit_dtypes_are_kept_and_never_probe(monkeypatch):
    monkeypatch.setattr(precision, "detect", lambda device: pytest.fail("an explicit dtype must not probe the hardware"))
    for name in ("float32", "bfloat16", "float16"):
        assert resolve_precision(name).dtype == name


def test_auto_resolves_through_detect_and_the_kept_calibration(monkeypatch):
    monkeypatch.delenv("SOLO_AUTO_DTYPE", raising=False)  # the suite pins auto; this test is about unpinned auto
    monkeypatch.setattr(precision, "detect", lambda device: Hardware("cpu", cpu_flags=frozenset({"avx512_bf16"})))
    monkeypatch.setattr(precision, "measure_cpu", lambda hardware: Measurement(1.6, None, cached=False))
    chosen = resolve_precision("auto", "cpu")
    assert chosen.dtype == "bfloat16"
    assert chosen.reason.startswith("bfloat16 on this CPU (avx512_bf16): one 1024x576x1536 matmul ran 1.60x as fast in bf16")


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

    monkeypatch.setattr(precision, "measure_cpu", lambda hardware: pytest.fail("a pinned auto measures nothing"))
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
    monkeypatch.setattr(precision, "measure_cpu", lambda hardware: Measurement(2.0, None, cached=False))
    native = Hardware("cpu", cpu_flags=frozenset({"amx_bf16"}))
    sent = []

    def total(value):  # rank 0 sends its choice, every other process 0: the sum is rank 0's choice
        sent.append(value)
        return 2.0

    first = resolve_precision("auto", "cpu", hardware=native, agreement=Agreement(True, total))
    other = resolve_precision("auto", "cpu", hardware=Hardware("cpu"), agreement=Agreement(False, total))
    assert first.dtype == other.dtype == "bfloat16" and sent == [2.0, 0.0]
    assert "first process" in other.reason


# Issue 28 (13): auto measured anew in every process, and a machine under load flipped it between runs (8 runs of one
# command gave 2 validation losses; a resumed run continued another dtype's run). The first measurement is kept per machine.

AMX = Hardware("cpu", cpu_flags=frozenset({"amx_bf16", "avx512f"}), cpu_capability="AVX512", cpu_model="Xeon Test 8480")


@pytest.fixture
def timings(monkeypatch):
    """Unpinned auto on an AMX CPU whose calibration times come from a list, one per measurement taken."""
    monkeypatch.delenv("SOLO_AUTO_DTYPE", raising=False)
    monkeypatch.setattr(precision, "detect", lambda device: AMX)
    queue = []
    monkeypatch.setattr(calibration, "time_matmuls", lambda: queue.pop(0))
    calibration.measure.cache_clear()
    yield queue
    calibration.measure.cache_clear()


def new_process():
    calibration.measure.cache_clear()  # what a fresh `solo train` starts with


def test_auto_gives_the_same_dtype_on_every_run_of_one_machine(timings, tmp_path):
    timings.extend([1.3, 1.1, 0.9])  # a noisy calibration around the 1.2x threshold
    first = resolve_precision("auto", "cpu")
    kept = tmp_path / "cache" / "auto-dtype.json"  # SOLO_CACHE is tmp_path/cache in every test (conftest)
    assert first.dtype == "bfloat16" and "(measured now, kept for this machine in " + str(kept) in first.reason
    for _ in range(2):
        new_process()
        again = resolve_precision("auto", "cpu")
        assert again.dtype == "bfloat16" and "1.30x" in again.reason and "measured by an earlier run" in again.reason
    assert timings == [1.1, 0.9]  # measured once
    assert "delete it to measure again" in again.reason
    kept.unlink()
    new_process()
    assert resolve_precision("auto", "cpu").dtype == "float32"  # measured again: 1.1x


def test_the_kept_measurement_belongs_to_one_cpu_model_flag_set_and_torch(timings, monkeypatch):
    timings.extend([3.0, 0.5, 0.5])
    assert resolve_precision("auto", "cpu").dtype == "bfloat16"
    other_cpu = Hardware("cpu", cpu_flags=AMX.cpu_flags, cpu_capability="AVX512", cpu_model="Xeon Test 6430")
    new_process()
    assert resolve_precision("auto", "cpu", hardware=other_cpu).dtype == "float32"
    new_process()
    monkeypatch.setattr(calibration.torch, "__version__", "9.9.9")
    assert resolve_precision("auto", "cpu").dtype == "float32"
    assert timings == []
    key = calibration.machine_key
    assert key("a", frozenset({"x", "y"}), "2.1") == key("a", frozenset({"y", "x"}), "2.1") != key("a", frozenset({"x"}), "2.1")


def test_a_malformed_kept_file_is_measured_again_and_rewritten(timings, tmp_path):
    kept = tmp_path / "cache" / "auto-dtype.json"
    kept.parent.mkdir(parents=True)
    mine = calibration.machine_key(AMX.cpu_model, AMX.cpu_flags, calibration.torch.__version__)
    for bad in ("{not json", "[]", json.dumps({mine: {"bf16_speedup": "fast"}}), json.dumps({mine: {"bf16_speedup": -1}})):
        kept.write_text(bad)
        timings.append(2.0)
        new_process()
        assert resolve_precision("auto", "cpu").dtype == "bfloat16"
        assert timings == []
    assert json.loads(kept.read_text())  # rewritten as JSON
    entry = next(iter(json.loads(kept.read_text()).values()))
    assert entry["cpu"] == "Xeon Test 8480" and entry["shape"] == [1024, 576, 1536] and entry["bf16_speedup"] == 2.0


def test_where_nothing_can_be_kept_auto_still_decides_and_says_so(timings, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SOLO_CACHE", str(blocker / "cache"))
    timings.append(2.0)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.dtype == "bfloat16" and "not kept" in chosen.reason
    assert resolve_precision("auto", "cpu") == chosen  # once per process: every decision of one run agrees


def test_the_reason_says_what_was_measured_not_a_training_speed(timings):
    timings.append(6.27)
    reason = resolve_precision("auto", "cpu").reason
    assert "one 1024x576x1536 matmul ran 6.27x as fast in bf16 as in float32" in reason
    assert "bf16 measured 6.27x" not in reason


def test_cpu_model_is_read_on_x86_and_arm(tmp_path):
    from solo_cli.engine.precision import cpu_model

    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\nprocessor\t: 1\nmodel name\t: other\n"
    )
    assert cpu_model(x86) == "Intel(R) Xeon(R) Platinum 8480+"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n")
    assert cpu_model(arm) == "0x41 0xd40"
    assert cpu_model(tmp_path / "missing")  # whatever Python knows: never empty on a real machine


def test_half_precision_says_which_guarantees_it_gives_up():
    assert Precision("float32", "as asked").exactness() is None
    for half in (Precision("bfloat16", "as asked"), Precision("float16", "as asked", grad_scaler=True)):
        note = half.exactness()
        assert f"exactness in {half.dtype}" in note and "N processes and 1" in note and "greedy text" in note
        assert "--resume" in note and "--dtype float32 keeps both" in note
    autocast = Precision("float32", "native bf16 GPU", autocast="bfloat16").exactness()
    assert "exactness in bfloat16" in autocast and "--dtype float32" not in autocast  # float32 autocasts there too


def test_the_kept_measurement_lives_in_solos_cache_folder(monkeypatch, tmp_path):
    from solo_cli.engine.models import cache_dir

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path))
    assert calibration._cache_file() == cache_dir() / "auto-dtype.json" == tmp_path / "auto-dtype.json"
    monkeypatch.delenv("SOLO_CACHE")
    assert calibration._cache_file() == cache_dir() / "auto-dtype.json"
