"""What a Linux kernel reports through /proc and /sys, on an Android phone or any Linux board.

The shell snippets that print CPU parts, cpufreq clusters, thermal zones and current frequencies,
and the pure functions that read what they print. Android (`android.py`) builds on them today; a
Linux board reached over SSH reads the same files.
"""

from __future__ import annotations

import re
from collections import defaultdict

from lutnas.device_agents.base import CpuCluster

# Prints, for each thermal zone, "@Z zoneN TYPE TEMP", the battery "@B TEMP" and "@F cpuN CUR_KHZ".
STATE_FUNCTION = (
    "lutnas_state() { for z in /sys/class/thermal/thermal_zone*; do "
    "echo \"@Z ${z##*/} $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)\"; done; "
    "echo \"@B $(cat /sys/class/power_supply/battery/temp 2>/dev/null)\"; "
    "for c in /sys/devices/system/cpu/cpu[0-9]*; do "
    "echo \"@F ${c##*/} $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null)\"; done; }"
)

# Prints "cpuN MAX_KHZ MIN_KHZ GOVERNOR" per core.
CPUFREQ_SCRIPT = (
    "for c in /sys/devices/system/cpu/cpu[0-9]*; do f=$c/cpufreq; "
    "echo \"${c##*/} $(cat $f/cpuinfo_max_freq 2>/dev/null) $(cat $f/cpuinfo_min_freq 2>/dev/null) "
    "$(cat $f/scaling_governor 2>/dev/null)\"; done"
)

# CPU part numbers of ARM cores (implementer 0x41), for a readable cpu_model.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}
_CPU_ZONE = re.compile(r"cpu|tsens|soc|big|mid|little|cluster|apc|mtktscpu", re.IGNORECASE)


def split_sections(text: str) -> dict[str, list[str]]:
    """Output of a probe script whose sections start with `@@NAME` lines -> {NAME: lines}."""
    sections: dict[str, list[str]] = defaultdict(list)
    current = ""
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("@@") and " " not in line:
            current = line[2:]
        else:
            sections[current].append(line)
    return sections


def parse_cpuinfo(lines: list[str]) -> tuple[dict[int, str], str]:
    """{core: CPU part} and the `Hardware` line (older kernels name the SoC there)."""
    parts: dict[int, str] = {}
    hardware = ""
    core = None
    for line in lines:
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit():
            core = int(value)
        elif key == "cpu part" and core is not None:
            parts[core] = value.lower()
        elif key == "hardware":
            hardware = value
    return parts, hardware


def parse_cpufreq(lines: list[str]) -> tuple[CpuCluster, ...]:
    """`cpuN MAX MIN GOVERNOR` lines -> clusters of cores sharing a max frequency, slowest first."""
    by_max: dict[int | None, list[tuple[int, int | None, str | None]]] = defaultdict(list)
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or not fields[0][3:].isdigit():
            continue
        core = int(fields[0][3:])
        max_khz = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        min_khz = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None
        governor = fields[3] if len(fields) > 3 else None
        by_max[max_khz].append((core, min_khz, governor))
    clusters = []
    for max_khz, cores in sorted(by_max.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        governors = sorted({g for _, _, g in cores if g})
        mins = [m for _, m, _ in cores if m is not None]
        clusters.append(CpuCluster(cores=tuple(sorted(c for c, _, _ in cores)), max_khz=max_khz,
                                   min_khz=min(mins) if mins else None,
                                   governor=",".join(governors) or None))
    return tuple(clusters)


def cpu_model_of(parts: dict[int, str], clusters: tuple[CpuCluster, ...]) -> str:
    """'4x Cortex-A55 + 2x Cortex-A78 + 2x Cortex-X1' from the CPU parts of each cluster."""
    return " + ".join(f"{len(cl.cores)}x {_part_names(parts, cl.cores)}".strip() for cl in clusters)


def parse_state(lines: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """`@Z/@B/@F` lines -> ({"TYPE": °C, "battery": °C}, {"cpuN": kHz})."""
    temps: dict[str, float] = {}
    freqs: dict[str, int] = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "@Z":
            value = _celsius(fields[-1])
            if value is not None:
                name = " ".join(fields[2:-1]) or fields[1]
                temps[name if name not in temps else f"{name}/{fields[1]}"] = value
        elif len(fields) == 2 and fields[0] == "@B":
            value = _number(fields[1])
            if value is not None:
                temps["battery"] = value / 10 if abs(value) > 200 else value  # tenths of °C
        elif len(fields) == 3 and fields[0] == "@F" and fields[2].isdigit():
            freqs[fields[1]] = int(fields[2])
    return temps, freqs


def hottest_cpu_c(temps: dict[str, float]) -> float | None:
    """The hottest CPU-like zone (all zones but the battery when none is named like a CPU)."""
    cpu = [t for name, t in temps.items() if _CPU_ZONE.search(name)]
    others = [t for name, t in temps.items() if name != "battery"]
    chosen = cpu or others
    return max(chosen) if chosen else None


def _part_names(parts: dict[int, str], cores: tuple[int, ...]) -> str:
    names = sorted({ARM_PARTS.get(parts.get(c, ""), parts.get(c, "")) for c in cores} - {""})
    return "/".join(names)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _celsius(text: str) -> float | None:
    """Thermal zones report millidegrees on most kernels, degrees on a few."""
    value = _number(text)
    if value is None:
        return None
    return value / 1000 if abs(value) >= 1000 else value
