"""A Linux board (Raspberry Pi, Jetson, any Linux machine) as a platform: where lutnas keeps its
files, the probe that fingerprints the board in one shell round trip, and the pure function from
the probe's output to a DeviceInfo. CPU parts, clusters and thermal zones are read by `kernel.py`,
the same readers (and so the same zone rules) as a phone's.
"""

from __future__ import annotations

import re

from lutnas.device_agents import kernel
from lutnas.device_agents.base import DeviceInfo
from lutnas.device_agents.remote import Platform

# Each section starts with an `@@NAME` line (kernel.split_sections). The device-tree model ends in
# a NUL byte; DMI files exist on x86 and some ARM servers; product_serial is readable by root only.
PROBE_SCRIPT = (
    "echo @@model; tr -d '\\000' 2>/dev/null < /proc/device-tree/model; echo; "
    "echo @@dmi; for f in sys_vendor product_name board_vendor board_name; do "
    "echo \"$f $(cat /sys/class/dmi/id/$f 2>/dev/null)\"; done; "
    "echo @@serial; tr -d '\\000' 2>/dev/null < /proc/device-tree/serial-number; echo; "
    "echo @@machine_id; cat /etc/machine-id 2>/dev/null; "
    "echo @@uname; uname -m; uname -r; uname -n; "
    "echo @@os_release; cat /etc/os-release 2>/dev/null; "
    "echo @@meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; "
    "echo @@cpuinfo; cat /proc/cpuinfo; "
    "echo @@cpufreq; " + kernel.CPUFREQ_SCRIPT + "; "
    "echo @@state; " + kernel.STATE_FUNCTION + "; lutnas_state; echo @@end"
)


def _first(lines: list[str]) -> str:
    return next((line.strip() for line in lines if line.strip()), "")


def _key_values(lines: list[str], sep: str) -> dict[str, str]:
    out = {}
    for line in lines:
        key, found, value = line.partition(sep)
        if found:
            out[key.strip()] = value.strip().strip('"')
    return out


def _cpu_name(lines: list[str]) -> str:
    """The `model name` (x86, some ARM kernels) or `Model` line of /proc/cpuinfo."""
    fields = _key_values(lines, ":")
    return fields.get("model name") or fields.get("Model") or fields.get("Hardware", "")


def device_info(text: str, address: str) -> DeviceInfo:
    """The output of PROBE_SCRIPT on the board at `address` -> its DeviceInfo.

    `device_id` is `linux:MODEL-SLUG:ID`, ID the machine-id (stable across reboots and upgrades),
    else the device-tree serial, else the host name.
    """
    sections = kernel.split_sections(text)
    dmi = {k: v for k, v in (line.partition(" ")[::2] for line in sections["dmi"]) if v.strip()}
    uname = [line.strip() for line in sections["uname"]] + ["", "", ""]
    machine, kernel_release, hostname = uname[0], uname[1], uname[2]
    parts, hardware = kernel.parse_cpuinfo(sections["cpuinfo"])
    clusters = kernel.parse_cpufreq(sections["cpufreq"])
    temps, _ = kernel.parse_state(sections["state"])
    watched, skipped = kernel.classify_zones(temps)  # the cool-down's zones, as on a phone
    os_release = _key_values(sections["os_release"], "=")
    memory = {k: int(v.split()[0]) for k, v in _key_values(sections["meminfo"], ":").items()
              if v.split() and v.split()[0].isdigit()}
    cpu_name = _cpu_name(sections["cpuinfo"])
    model = (_first(sections["model"]) or dmi.get("product_name", "").strip() or cpu_name
             or "unknown Linux machine")
    manufacturer = dmi.get("sys_vendor", "").strip()
    serial = _first(sections["serial"])
    stable_id = _first(sections["machine_id"])[:12] or serial or hostname or address
    cores = max([len(parts), len([line for line in sections["cpuinfo"] if line.startswith("processor")])]
                + [1 + max(c.cores) for c in clusters if c.cores])
    slug = re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-").lower()
    return DeviceInfo(
        device_id=f"linux:{slug}:{stable_id}",
        kind="linux",
        model=model,
        manufacturer=manufacturer,
        soc=hardware or dmi.get("board_name", "").strip(),
        abi=machine,
        os_name=os_release.get("NAME", "Linux"),
        os_version=f"{os_release.get('VERSION_ID', '')} (kernel {kernel_release})".strip(),
        cpu_model=(kernel.cpu_model_of(parts, clusters) if parts else "") or cpu_name or machine,
        cores=cores,
        clusters=clusters,
        extra={"address": address, "hostname": hostname, "serial": serial,
               "memory_total_kb": memory.get("MemTotal"), "memory_available_kb": memory.get("MemAvailable"),
               "os_pretty_name": os_release.get("PRETTY_NAME", ""),
               "governors": sorted({c.governor for c in clusters if c.governor}),
               "thermal_zones": sorted(t for t in temps if t != "battery"),
               "thermal_zones_watched": sorted(watched),
               "thermal_zones_skipped": dict(sorted(skipped.items()))},
    )


# work_dir is where lutnas keeps files when the agent is not told the board's home directory.
LINUX = Platform(name="a Linux board", noun="board", work_dir="/tmp/lutnas",
                 probe_script=PROBE_SCRIPT, device_info=device_info)
