"""Hardware profiles: the numbers of reference/hardware_and_costs.md §7, lookup, CPU JSON."""

import dataclasses
import json

import pytest

from partir.simulator import PROFILES, Hardware, SimulatorError, get_hardware, save_cpu_profile
from partir.simulator.hardware import DEFAULT_CPU, GiB, cpu_profile

# Critical arithmetic intensity, peak FLOP/s over HBM B/s (reference §6.6).
INTENSITY = {
    "tpu-v4": 229, "tpu-v5e": 240, "tpu-v5p": 166, "tpu-v6e": 560,
    "a100": 153, "h100": 295, "h200": 206,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(INTENSITY))
def test_profile_intensity_matches_reference(name):
    hw = get_hardware(name)
    assert hw.name == name
    assert hw.critical_intensity == pytest.approx(INTENSITY[name], abs=1)


def test_profile_numbers():
    assert get_hardware("tpu-v5p").memory_bytes == 95e9
    assert get_hardware("tpu-v4").memory_bytes == 32 * GiB
    assert get_hardware("h200").memory_bytes == 141e9
    assert get_hardware("h100").hbm_bandwidth_bytes_per_s == 3.35e12  # not 3.35 TiB/s
    v5p_ici = get_hardware("tpu-v5p").link("ici")
    assert v5p_ici.bandwidth_bytes_per_s == 9e10  # scaling book
    assert v5p_ici.alt_bandwidth_bytes_per_s == pytest.approx(1e11)  # Cloud docs / 6 ports
    assert get_hardware("tpu-v6e").link("ici").alt_bandwidth_bytes_per_s == pytest.approx(1e11)
    assert get_hardware("tpu-v5e").link("ici").bandwidth_bytes_per_s == 4.5e10
    nvl = get_hardware("a100").link("nvlink")
    assert (nvl.bandwidth_bytes_per_s, nvl.efficiency) == (300e9, 0.65)
    assert get_hardware("h100").link("nvlink").effective_bandwidth_bytes_per_s == pytest.approx(
        320e9
    )
    assert get_hardware("a100").link("infiniband").bandwidth_bytes_per_s == 25e9
    assert get_hardware("h100").link("infiniband").bandwidth_bytes_per_s == 50e9


def test_lookup():
    assert get_hardware("v5p") is PROFILES["tpu-v5p"]
    assert get_hardware("H100") is PROFILES["h100"]
    hw = PROFILES["a100"]
    assert get_hardware(hw) is hw
    with pytest.raises(SimulatorError, match=r"unknown hardware profile 'tpu-v9'.*tpu-v5p"):
        get_hardware("tpu-v9")
    with pytest.raises(SimulatorError, match="no 'ici' link"):
        hw.link("ici")


def test_peak_per_dtype():
    a100 = get_hardware("a100")
    assert a100.peak_flops_per_s("bfloat16") == 312e12
    assert a100.peak_flops_per_s("float32") == 156e12
    assert get_hardware("tpu-v5e").peak_flops_per_s("int8") == 393e12


def test_efficiency_steps():
    hw = get_hardware("a100")  # Calculon's A100 tables
    assert hw.compute_efficiency_at(200e9) == 0.95
    assert hw.compute_efficiency_at(2e9) == 0.6
    assert hw.compute_efficiency_at(10.0) == 0.1
    assert hw.memory_efficiency_at(150e6) == 0.9
    assert hw.memory_efficiency_at(0) == 0.3


def test_frozen_and_hashable():
    hw = get_hardware("tpu-v4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hw.memory_bytes = 1  # type: ignore[misc]
    assert {hw: 1}[get_hardware("tpu-v4")] == 1


def test_dict_round_trip():
    for hw in PROFILES.values():
        assert Hardware.from_dict(json.loads(json.dumps(hw.to_dict()))) == hw
    with pytest.raises(SimulatorError, match="unknown hardware fields"):
        Hardware.from_dict({**DEFAULT_CPU.to_dict(), "warp_drive": 1})


def test_cpu_profile_default_and_calibrated(tmp_path, monkeypatch):
    path = tmp_path / "cpu.json"
    monkeypatch.setenv("PARTIR_CPU_PROFILE", str(path))
    assert get_hardware("cpu") == DEFAULT_CPU
    measured = dataclasses.replace(DEFAULT_CPU, peak_f32_flops_per_s=1.5e11)
    assert save_cpu_profile(measured) == path
    assert get_hardware("cpu") == measured
    path.write_text(json.dumps({"hbm_bandwidth_bytes_per_s": 3e10}))  # partial: defaults fill in
    assert cpu_profile().hbm_bandwidth_bytes_per_s == 3e10
    assert cpu_profile().peak_f32_flops_per_s == DEFAULT_CPU.peak_f32_flops_per_s
    path.write_text("{not json")
    with pytest.raises(SimulatorError, match="cannot read the CPU profile"):
        get_hardware("cpu")


def test_a_profile_with_a_zero_efficiency_is_refused():
    # a calibration lost in noise once wrote 0.0: every op of that size would be free
    from partir.simulator import Hardware, SimulatorError, get_hardware

    data = get_hardware("cpu").to_dict()
    data["memory_efficiency"] = [[1024.0, 1.0], [0.0, 0.0]]
    with pytest.raises(SimulatorError, match=r"memory_efficiency fractions must be in \(0, 1\]"):
        Hardware.from_dict(data)
