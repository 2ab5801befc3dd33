"""The Linux platform's fingerprint from probe output as boards print it (pure: no SSH)."""

from __future__ import annotations

from lutnas.device_agents import kernel
from lutnas.device_agents.linux import PROBE_SCRIPT, device_info

# /proc/cpuinfo of a Raspberry Pi 5 (4x Cortex-A76, part 0xd0b), abridged to the fields read.
PI5_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    f"CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for n in range(4)
) + "Revision\t: d04170\nSerial\t\t: 6a4d1bb0e5d1f2c3\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"

PI5 = "\n".join([
    "@@model", "Raspberry Pi 5 Model B Rev 1.0", "",
    "@@dmi", "sys_vendor ", "product_name ", "board_vendor ", "board_name ",
    "@@serial", "6a4d1bb0e5d1f2c3", "",
    "@@machine_id", "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "@@uname", "aarch64", "6.6.31+rpt-rpi-2712", "pi5",
    "@@os_release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', 'NAME="Debian GNU/Linux"',
    'VERSION_ID="12"',
    "@@meminfo", "MemTotal:        8245376 kB", "MemAvailable:    7612032 kB",
    "@@cpuinfo", *PI5_CPUINFO.splitlines(),
    "@@cpufreq", *[f"cpu{n} 2400000 1500000 ondemand" for n in range(4)],
    "@@state", "@Z thermal_zone0 cpu-thermal 51350", "@B ",
    *[f"@F cpu{n} 1500000" for n in range(4)],
    "@@end",
])

# A Jetson Orin Nano: 6 cores in two clusters, a GPU zone next to the CPU one, a PMIC sensor
# that reads a bogus 107 °C... and one reading -40 °C (unconnected sensor).
JETSON = "\n".join([
    "@@model", "NVIDIA Jetson Orin Nano Developer Kit", "",
    "@@dmi", "sys_vendor ", "product_name ",
    "@@serial", "1421223062155", "",
    "@@machine_id", "",
    "@@uname", "aarch64", "5.15.136-tegra", "orin",
    "@@os_release", 'NAME="Ubuntu"', 'VERSION_ID="22.04"',
    "@@meminfo", "MemTotal:        7620968 kB",
    "@@cpuinfo", *"".join(f"processor\t: {n}\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n\n"
                          for n in range(6)).splitlines(),
    "@@cpufreq", *[f"cpu{n} 1510400 115200 schedutil" for n in range(4)],
    *[f"cpu{n} 1510400 115200 schedutil" for n in (4, 5)],
    "@@state", "@Z thermal_zone0 cpu-thermal 47500", "@Z thermal_zone1 gpu-thermal 46000",
    "@Z thermal_zone2 soc0-thermal 47000", "@Z thermal_zone8 tj-thermal -40000",
    "@Z thermal_zone9 pmic-die 107000",
    "@@end",
])


def test_probe_script_sections_are_what_device_info_reads():
    for name in ("model", "dmi", "serial", "machine_id", "uname", "os_release", "meminfo", "cpuinfo",
                 "cpufreq", "state"):
        assert f"echo @@{name};" in PROBE_SCRIPT


def test_raspberry_pi_5():
    info = device_info(PI5, "pi@10.0.0.5:22")
    assert info.device_id == "linux:raspberry-pi-5-model-b-rev-1-0:0f1e2d3c4b5a"
    assert (info.kind, info.model, info.abi, info.cores) == ("linux", "Raspberry Pi 5 Model B Rev 1.0",
                                                             "aarch64", 4)
    assert info.cpu_model == "4x Cortex-A76"
    assert info.os_name == "Debian GNU/Linux" and info.os_version == "12 (kernel 6.6.31+rpt-rpi-2712)"
    assert [(c.cores, c.max_khz, c.min_khz, c.governor) for c in info.clusters] == [
        ((0, 1, 2, 3), 2400000, 1500000, "ondemand")]
    assert info.extra["memory_total_kb"] == 8245376 and info.extra["governors"] == ["ondemand"]
    assert info.extra["thermal_zones_watched"] == ["cpu-thermal"]
    temps, freqs = kernel.parse_state(PI5.split("@@state\n")[1].splitlines())
    assert kernel.hottest_cpu_c(temps) == 51.35 and freqs["cpu3"] == 1500000
    assert info.to_dict() == type(info).from_dict(info.to_dict()).to_dict()


def test_jetson_zones_follow_the_phone_rules():
    info = device_info(JETSON, "nvidia@orin.local:22")
    # no machine-id: the device-tree serial keeps the id stable
    assert info.device_id == "linux:nvidia-jetson-orin-nano-developer-kit:1421223062155"
    assert info.cores == 6 and info.os_name == "Ubuntu"
    # kernel.classify_zones' rules, unchanged for boards: the CPU zone is watched; soc0-thermal is
    # not named like a CPU/SoC sensor there, so it is skipped with the GPU's
    assert info.extra["thermal_zones_watched"] == ["cpu-thermal"]
    skipped = info.extra["thermal_zones_skipped"]
    assert set(skipped) == {"gpu-thermal", "soc0-thermal", "tj-thermal", "pmic-die"}
    assert "outside" in skipped["tj-thermal"] and "PMIC" in skipped["pmic-die"]


def test_an_x86_machine_without_device_tree_uses_dmi():
    text = "\n".join(["@@model", "", "@@dmi", "sys_vendor Intel(R) Client Systems", "product_name NUC11TNHi5",
                      "@@serial", "", "@@machine_id", "abcdef0123456789", "@@uname", "x86_64", "6.1.0",
                      "nuc", "@@os_release", "@@meminfo", "@@cpuinfo", "processor\t: 0",
                      "model name\t: 11th Gen Intel(R) Core(TM) i5-1135G7 @ 2.40GHz", "", "@@cpufreq",
                      "@@state", "@@end"])
    info = device_info(text, "me@nuc:22")
    assert (info.model, info.manufacturer, info.abi) == ("NUC11TNHi5", "Intel(R) Client Systems", "x86_64")
    assert info.cpu_model.startswith("11th Gen Intel") and info.device_id == "linux:nuc11tnhi5:abcdef012345"


def test_the_uploaded_worker_needs_no_other_lutnas_module():
    """`SshAgent` uploads only WORKER_MODULES for the board's Python: every lutnas module they
    import (at any depth, inside functions too) must be among them."""
    import ast
    from pathlib import Path

    from lutnas.device_agents.ssh import WORKER_MODULES

    root = Path(__file__).resolve().parents[2] / "lutnas"
    uploaded = {"lutnas." + name.removesuffix(".py").replace("/", ".") for name in WORKER_MODULES}
    for name in WORKER_MODULES:
        tree = ast.parse((root / name).read_text())
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        lutnas_modules = {m for m in imported if m.startswith("lutnas")}
        assert lutnas_modules <= uploaded, f"{name} imports {lutnas_modules - uploaded}"
