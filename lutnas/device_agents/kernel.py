"""What a Linux kernel reports through /proc and /sys, on an Android phone or any Linux board.

The shell snippets that print CPU parts, cpufreq clusters, thermal zones and current frequencies,
and the pure functions that read what they print. Android (`android.py`) builds on them today; a
Linux board reached over SSH reads the same files.
"""

from __future__ import annotations

import re
from collections import defaultdict

from lutnas.device_agents.base import CpuCluster, parse_cores
from lutnas.errors import BadInputError

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
# Zones read for the cool-down: CPU, cluster and SoC temperature sensors, by type name.
_CPU_ZONE = re.compile(r"cpu|tsens|big|mid|little|cluster|apc|mtktscpu|soc[-_ ]?(?:therm|temp|max)|"
                       r"soc_thermal|pkg_temp|core", re.IGNORECASE)
# Zones that are not temperatures of the CPU at all: Qualcomm BCL (battery current limit) zones
# report battery percent (`soc`, `socd`), voltage (`vbat`) or current (`ibat`); battery and PMIC
# zones follow the charger. Read as °C they stall a run (87 % battery "is" 87 °C).
_NOT_TEMPERATURE = re.compile(r"^socd?$|bcl|vbat|ibat|batt|pmic|^pm[a-z]*\d+|-lvl\d|charger|^usb",
                              re.IGNORECASE)
PLAUSIBLE_C = (0.0, 125.0)  # a CPU zone outside this range is a wrong or non-temperature reading


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


CORE_NAMES = ("big", "little", "prime", "all")  # --cores by cluster, resolved per device


def resolve_cores(spec: str, clusters: tuple[CpuCluster, ...],
                  device: str = "the device") -> tuple[tuple[int, ...] | None, str | None]:
    """--cores `spec` on a device with `clusters` (slowest first) -> (cores or None, warning or None).

    `all`: not pinned. `little`: the slowest cluster. `big`: every cluster but the slowest (a 6+2
    phone's 2, a 4+3+1 phone's 4). `prime`: the fastest cluster of a phone with three or more.
    A LIST (`0,1`, `4-7`) is taken as written, with a warning when it spans clusters (its timings
    mix core types). Raises BadInputError for a name the device's clusters cannot honour.
    """
    if spec == "all":
        return None, None
    known = [c for c in clusters if c.cores]
    described = ", ".join(f"{_span(c.cores)} ({(c.max_khz or 0) / 1000:.0f} MHz)" for c in known) or "none"
    if spec in CORE_NAMES:
        if len(known) < 2 or (spec == "prime" and len(known) < 3):
            raise BadInputError(f"--cores {spec}: {device} has clusters {described}; use --cores all "
                                f"or a core list")
        chosen = {"little": known[:1], "big": known[1:], "prime": known[-1:]}[spec]
        return tuple(sorted(c for cluster in chosen for c in cluster.cores)), None
    cores = parse_cores(spec)
    spanned = [c for c in known if set(c.cores) & set(cores)]
    if len(spanned) > 1:
        names = " and ".join(f"{_span(c.cores)} ({(c.max_khz or 0) / 1000:.0f} MHz)" for c in spanned)
        return cores, (f"--cores {spec} spans the clusters {names} of {device}: its timings mix core "
                       f"types; use --cores big, little or one cluster's cores")
    return cores, None


def _span(cores: tuple[int, ...]) -> str:
    """(4, 5, 6, 7) -> '4-7'; (0, 2) -> '0,2'."""
    if cores == tuple(range(cores[0], cores[-1] + 1)) and len(cores) > 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))


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


def classify_zones(temps: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Split zones ({type: °C}) into those the cool-down watches and {type: why skipped}.

    Watched: CPU, cluster and SoC temperature sensors (by type name) reading 0-125 °C. When no
    zone is named like a CPU, every plausible zone but battery/BCL/PMIC ones (a board with only
    `acpitz`, say). Skipped: the battery, BCL and PMIC zones, values outside 0-125 °C, and other
    sensors (GPU, skin, crystal) when CPU zones exist.
    """
    watched: dict[str, float] = {}
    others: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name, value in temps.items():
        zone_type = name.split("/")[0]
        if name == "battery" or _NOT_TEMPERATURE.search(zone_type):
            skipped[name] = "battery/BCL/PMIC zone, not a CPU temperature"
        elif not PLAUSIBLE_C[0] <= value <= PLAUSIBLE_C[1]:
            skipped[name] = f"{value:g} is outside {PLAUSIBLE_C[0]:g}-{PLAUSIBLE_C[1]:g} °C"
        elif _CPU_ZONE.search(zone_type):
            watched[name] = value
        else:
            others[name] = value
    if not watched:
        return others, skipped
    skipped.update({name: "not a CPU/SoC sensor" for name in others})
    return watched, skipped


def hottest_cpu_c(temps: dict[str, float]) -> float | None:
    """The hottest watched zone (`classify_zones`), None when no zone is watched."""
    watched, _ = classify_zones(temps)
    return max(watched.values()) if watched else None


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
