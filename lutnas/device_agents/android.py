"""Android as a platform: where lutnas keeps its files, the probe that fingerprints a phone in one
shell round trip, and the pure function from the probe's output to a DeviceInfo."""

from __future__ import annotations

import re

from lutnas.device_agents import kernel
from lutnas.device_agents.base import DeviceInfo
from lutnas.device_agents.remote import Platform

PROBE_SCRIPT = (
    "echo @@getprop; getprop; echo @@cpuinfo; cat /proc/cpuinfo; echo @@cpufreq; "
    + kernel.CPUFREQ_SCRIPT + "; echo @@state; " + kernel.STATE_FUNCTION + "; lutnas_state; echo @@end"
)


def parse_getprop(lines: list[str]) -> dict[str, str]:
    """`[key]: [value]` lines of `getprop` -> {key: value}."""
    props = {}
    for line in lines:
        match = re.match(r"^\[([^\]]+)\]: \[(.*)\]$", line.strip())
        if match:
            props[match.group(1)] = match.group(2)
    return props


def device_info(text: str, address: str) -> DeviceInfo:
    """The output of PROBE_SCRIPT on the phone at `address` -> its DeviceInfo."""
    sections = kernel.split_sections(text)
    props = parse_getprop(sections["getprop"])
    parts, hardware = kernel.parse_cpuinfo(sections["cpuinfo"])
    clusters = kernel.parse_cpufreq(sections["cpufreq"])
    temps, _ = kernel.parse_state(sections["state"])
    watched, skipped = kernel.classify_zones(temps)
    manufacturer = props.get("ro.product.manufacturer", "")
    model = props.get("ro.product.model", "") or "unknown Android device"
    serial = props.get("ro.serialno") or props.get("ro.boot.serialno") or address
    soc = (props.get("ro.soc.model") or props.get("ro.board.platform") or hardware
           or props.get("ro.hardware", ""))
    cores = max([len(parts)] + [1 + max(c.cores) for c in clusters if c.cores])
    release, sdk = props.get("ro.build.version.release", ""), props.get("ro.build.version.sdk", "")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{manufacturer}-{model}").strip("-").lower()
    return DeviceInfo(
        device_id=f"android:{slug}:{serial}",
        kind="android",
        model=model,
        manufacturer=manufacturer,
        soc=soc,
        abi=props.get("ro.product.cpu.abi", ""),
        os_name="Android",
        os_version=f"{release} (SDK {sdk})" if sdk else release,
        cpu_model=kernel.cpu_model_of(parts, clusters) or hardware,
        cores=cores,
        clusters=clusters,
        extra={"serial": serial, "address": address,
               "build_fingerprint": props.get("ro.build.fingerprint", ""),
               "thermal_zones": sorted(t for t in temps if t != "battery"),
               "thermal_zones_watched": sorted(watched),
               "thermal_zones_skipped": dict(sorted(skipped.items())),
               "abilist": props.get("ro.product.cpu.abilist", ""),
               "soc_manufacturer": props.get("ro.soc.manufacturer", "")},
    )


ANDROID = Platform(name="an Android phone", noun="phone", work_dir="/data/local/tmp/lutnas",
                   probe_script=PROBE_SCRIPT, device_info=device_info)
