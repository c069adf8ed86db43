"""`partir calibrate`: a quick calibration writes a CPU profile the simulator loads."""

import json
import math

import jax
import pytest

from partir.cli import main
from partir.cli.calibrate import (
    KINDS,
    QUICK,
    CalibrationError,
    calibrate,
    fit_collective,
)
from partir.simulator import AxisLink, Hardware, collective_time, get_hardware, save_cpu_profile


@pytest.fixture(scope="module")
def profile():
    lines: list[str] = []
    hw = calibrate(quick=True, progress=lines.append)
    return hw, lines


def test_quick_calibration_is_positive_and_plausible(profile):
    hw, lines = profile
    assert lines[0].startswith("calibrating 8 CPU devices")
    assert any("matmul float32" in line for line in lines)
    assert all(f"-> {kind}" in "\n".join(lines) for kind in KINDS)
    # a CPU device: between 10 MFLOP/s and 10 TFLOP/s, 10 MB/s and 10 TB/s
    assert 1e7 < hw.peak_f32_flops_per_s < 1e13
    assert 1e7 < hw.peak_bf16_flops_per_s < 1e13
    assert 1e7 < hw.hbm_bandwidth_bytes_per_s < 1e13
    assert 0 < hw.kernel_overhead_s < 1e-2 and 0 < hw.launch_overhead_s < 1.0
    assert hw.buffer_overhead_s >= 0 and hw.flops_per_transcendental >= 1
    assert hw.memory_bytes > 0
    for _, eff in hw.compute_efficiency + hw.memory_efficiency:
        assert 0 < eff <= 1
    (link,) = hw.links
    assert {k[0] for k in link.per_kind} == set(KINDS)
    for _, base, step, bandwidth in link.per_kind:
        assert base > 0 and step > 0 and bandwidth > 0


def test_fitted_collective_times_grow_with_size_and_group(profile):
    hw, _ = profile
    link = hw.link("loopback")
    for kind in KINDS:
        for n in (2, 8):
            group = [AxisLink("x", n, link)]
            times = [collective_time(kind, v, group) for v in (1e3, 1e6, 1e8)]
            assert 0 < times[0] < times[1] < times[2]
        if kind in ("all_gather", "all_reduce", "reduce_scatter"):
            # ring steps and bytes sent both grow with the group for these; an all-to-all
            # sends (n-1)/n^2 of the buffer per peer and a permute the same bytes at any size,
            # so for them a larger group may be as fast, whatever the measurement noise
            small = [collective_time(kind, 1e6, [AxisLink("x", n, link)]) for n in (2, 8)]
            assert small[0] <= small[1]


def test_profile_round_trips_through_json(profile, tmp_path, monkeypatch):
    hw, _ = profile
    path = save_cpu_profile(hw, tmp_path / "cpu.json")
    loaded = Hardware.from_dict(json.loads(path.read_text()))
    assert loaded == hw
    monkeypatch.setenv("PARTIR_CPU_PROFILE", str(path))
    assert get_hardware("cpu") == hw


def test_fit_recovers_known_terms():
    base, step, bandwidth = 20e-6, 5e-6, 2e9
    samples = []
    for g in (2, 4, 8):
        for v in (1e3, 1e5, 1e7):
            sent = 2 * (g - 1) / g * v
            samples.append((g, v, base + 2 * (g - 1) * step + sent / bandwidth))
    fitted = fit_collective("all_reduce", samples)
    assert fitted == pytest.approx((base, step, bandwidth), rel=1e-3)


def test_needs_several_devices():
    with pytest.raises(CalibrationError, match="jax_num_cpu_devices"):
        calibrate(quick=True, devices=jax.devices("cpu")[:1])


def test_cli_writes_the_profile(tmp_path, capsys, monkeypatch):
    import partir.cli.calibrate as module

    tiny = module.Plan(
        matmul_sizes=(32, 64),
        bandwidth_elements=(1 << 10, 1 << 18),
        collective_bytes=(256, 4096),
        group_sizes=(2,),
        chain=2,
        repeats=2,
        min_chain_s=1e-4,
    )
    monkeypatch.setattr(module, "QUICK", tiny)
    out = tmp_path / "sub" / "cpu.json"
    assert main(["calibrate", "--quick", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibrating" in printed and f"wrote {out}" in printed
    hw = Hardware.from_dict(json.loads(out.read_text()))
    assert hw.name == "cpu" and math.isfinite(hw.peak_f32_flops_per_s)
    assert QUICK.repeats >= 3  # the real quick plan is untouched
