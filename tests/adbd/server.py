"""A simulated adbd on loopback: the real ADB wire protocol, a sandbox for /data/local/tmp, a phone profile.

It is a test double of the *phone*, not of adb-shell: the stock `adb` client talks to it too. One
thread accepts connections; each connection has a reader thread that dispatches messages to its
streams, and each stream (a `shell:` or `sync:` service) runs in its own thread, sending one WRTE
at a time and waiting for the peer's OKAY as protocol v1 requires.

Device paths are mapped into the sandbox: `/data/local/tmp` -> SANDBOX/data/local/tmp, `/proc/...`
and `/sys/...` -> SANDBOX/root/..., where the profile's cpuinfo, cpufreq and thermal files are
written. `getprop` and `taskset` are shell scripts on the sandbox's PATH.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.adbd import protocol as p

DEVICE_TMP = "/data/local/tmp"
PROFILES = Path(__file__).parent / "profiles"
RUNNER_DOUBLE = Path(__file__).parent / "benchmark_model"


@dataclass
class Faults:
    """Faults to inject; tests may change them while the server runs (counters count down)."""

    drop_after_commands: int | None = None  # close the connection when this many services were opened
    offline_after_drop: bool = False  # ...and refuse every later connection (phone unplugged)
    runner_fault: str | None = None  # "garble", "truncate" or "crash": the runner double misbehaves
    runner_fault_count: int = 0  # ... for this many runs
    slow_s: float = 0.0  # wait this long before answering each OPEN
    hot_reads: int = 0  # shell commands reading thermal files see hot_c this many times
    hot_c: float = 80.0
    reject_key: bool = False  # the user denies the "Allow USB debugging?" prompt
    tls_only: bool = False  # Android 11+ wireless debugging: answer CNXN with STLS (TLS required)


@dataclass
class DeviceProfile:
    serial: str
    props: dict[str, str]
    clusters: list[dict[str, Any]]
    thermal: list[dict[str, Any]]
    battery_temp_c: float = 30.0
    cpuinfo_hardware: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path) -> "DeviceProfile":
        path = Path(name_or_path)
        if not path.exists():
            path = PROFILES / f"{name_or_path}.yaml"
        data = yaml.safe_load(path.read_text())
        data["props"] = {k: str(v) for k, v in data["props"].items()}
        return cls(**data)

    @property
    def num_cores(self) -> int:
        return 1 + max(core for cluster in self.clusters for core in cluster["cores"])


@dataclass
class _Stream:
    local_id: int
    remote_id: int
    acks: queue.Queue = field(default_factory=queue.Queue)
    incoming: queue.Queue = field(default_factory=queue.Queue)
    closed: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class SimulatedAdbd:
    """Serve one simulated phone on 127.0.0.1:`port` (0 = any free port) until `stop()`."""

    def __init__(self, sandbox: Path, profile: str | Path | DeviceProfile = "pixel7", port: int = 0,
                 trusted_keys: list[Path] | None = None, accept_new_keys: bool = True,
                 require_auth: bool = True, faults: Faults | None = None):
        self.profile = profile if isinstance(profile, DeviceProfile) else DeviceProfile.load(profile)
        self.sandbox = Path(sandbox).resolve()
        self.faults = faults or Faults()
        self.require_auth = require_auth
        self.accept_new_keys = accept_new_keys
        self.trusted = [p.decode_android_pubkey(Path(k).read_bytes()) for k in trusted_keys or []]
        self.commands: list[str] = []  # every service opened, for tests to inspect
        self.prompts = 0  # how many times a new key was offered
        self._lock = threading.Lock()
        self._services_opened = 0
        self._offline = False
        self._sockets: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._setup_sandbox()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "SimulatedAdbd":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._offline = True
        try:
            self._server.close()
        except OSError:
            pass
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def set_online(self, online: bool) -> None:
        self._offline = not online

    def __enter__(self) -> "SimulatedAdbd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the phone's files ---------------------------------------------------------------------
    @property
    def device_tmp(self) -> Path:
        return self.sandbox / "data" / "local" / "tmp"

    @property
    def root(self) -> Path:
        return self.sandbox / "root"

    def _setup_sandbox(self) -> None:
        prof = self.profile
        self.device_tmp.mkdir(parents=True, exist_ok=True)
        (self.sandbox / ".sim").mkdir(exist_ok=True)
        bin_dir = self.sandbox / "bin"
        bin_dir.mkdir(exist_ok=True)
        props = self.root / "props.txt"
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text("".join(f"[{k}]: [{v}]\n" for k, v in sorted(prof.props.items())))
        _script(bin_dir / "getprop", f"""#!/bin/sh
if [ $# -eq 0 ]; then cat '{props}'; exit 0; fi
while IFS= read -r line; do
  case "$line" in "[$1]: ["*) v=${{line#*]: [}}; printf '%s\\n' "${{v%]}}"; exit 0;; esac
done < '{props}'
echo
""")
        _script(bin_dir / "taskset", f"""#!/bin/sh
# toybox taskset: MASK COMMAND...; a mask naming no core of this phone fails like the real one.
mask=$1; shift
case "$mask" in 0x*|[0-9]*) ;; *) echo "taskset: bad mask '$mask'" >&2; exit 1;; esac
if [ $((mask)) -eq 0 ] || [ $((mask)) -ge {1 << prof.num_cores} ]; then
  echo "taskset: sched_setaffinity: Invalid argument" >&2; exit 1
fi
exec "$@"
""")
        lines = []
        for cluster in prof.clusters:
            for core in cluster["cores"]:
                lines += [f"processor\t: {core}", "BogoMIPS\t: 49.15",
                          "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp",
                          "CPU implementer\t: 0x41", "CPU architecture: 8", "CPU variant\t: 0x1",
                          f"CPU part\t: {cluster['part']}", "CPU revision\t: 0", ""]
                cpu = self.root / "sys/devices/system/cpu" / f"cpu{core}" / "cpufreq"
                cpu.mkdir(parents=True, exist_ok=True)
                (cpu / "cpuinfo_max_freq").write_text(f"{cluster['max_khz']}\n")
                (cpu / "cpuinfo_min_freq").write_text(f"{cluster['min_khz']}\n")
                (cpu / "scaling_cur_freq").write_text(f"{cluster['max_khz']}\n")
                (cpu / "scaling_governor").write_text(f"{cluster['governor']}\n")
        if prof.cpuinfo_hardware:
            lines.append(f"Hardware\t: {prof.cpuinfo_hardware}")
        (self.root / "proc").mkdir(exist_ok=True)
        (self.root / "proc/cpuinfo").write_text("\n".join(lines) + "\n")
        battery = self.root / "sys/class/power_supply/battery"
        battery.mkdir(parents=True, exist_ok=True)
        (battery / "temp").write_text(f"{round(prof.battery_temp_c * 10)}\n")
        self._write_thermal(hot=False)

    def _write_thermal(self, hot: bool) -> None:
        for index, zone in enumerate(self.profile.thermal):
            path = self.root / "sys/class/thermal" / f"thermal_zone{index}"
            path.mkdir(parents=True, exist_ok=True)
            (path / "type").write_text(f"{zone['type']}\n")
            is_cpu = zone["type"].lower() not in ("battery", "skin-therm", "xo-therm")
            temp = self.faults.hot_c if hot and is_cpu else zone["temp_c"]
            (path / "temp").write_text(f"{round(temp * 1000)}\n")

    def map_path(self, device_path: str) -> Path | None:
        if device_path == DEVICE_TMP or device_path.startswith(DEVICE_TMP + "/"):
            return self.device_tmp / device_path[len(DEVICE_TMP):].lstrip("/")
        return None

    def map_command(self, command: str) -> str:
        command = command.replace(DEVICE_TMP, str(self.device_tmp))
        return re.sub(r"(?<![\w./-])/(sys|proc)/", lambda m: f"{self.root}/{m.group(1)}/", command)

    # -- connections ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            if self._offline:
                sock.close()
                continue
            with self._lock:
                self._sockets.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            _Connection(self, sock).run()
        except (ConnectionError, OSError, p.ProtocolError, struct.error):
            pass
        finally:
            with self._lock:
                self._sockets.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _count_service(self) -> bool:
        """Count an opened service; True when the drop fault fires now."""
        with self._lock:
            self._services_opened += 1
            limit = self.faults.drop_after_commands
            if limit is not None and self._services_opened > limit:
                self.faults.drop_after_commands = None
                if self.faults.offline_after_drop:
                    self._offline = True
                return True
        return False

    def banner(self) -> bytes:
        props = self.profile.props
        return (f"device::ro.product.name={props.get('ro.product.name', '')};"
                f"ro.product.model={props.get('ro.product.model', '')};"
                f"ro.product.device={props.get('ro.product.device', '')};"
                "features=cmd").encode()

    def run_shell(self, command: str, write) -> None:
        """Run `command` with /bin/sh in the sandbox, streaming stdout+stderr (shell v1 merges them)."""
        if "thermal" in command:
            with self._lock:
                hot = self.faults.hot_reads > 0
                if hot:
                    self.faults.hot_reads -= 1
                self._write_thermal(hot)
        fault = self.sandbox / ".sim" / "runner_fault"
        if self.faults.runner_fault and self.faults.runner_fault_count > 0:
            fault.write_text(f"{self.faults.runner_fault} {self.faults.runner_fault_count}\n")
            self.faults.runner_fault_count = 0
        env = {"PATH": os.pathsep.join([str(self.sandbox / "bin"), os.path.dirname(sys.executable),
                                        "/usr/bin", "/bin"]),
               "HOME": str(self.device_tmp), "TMPDIR": str(self.device_tmp),
               "LUTNAS_SIM_DIR": str(self.sandbox / ".sim"), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(["/bin/sh", "-c", self.map_command(command)], cwd=self.device_tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
        try:
            assert proc.stdout is not None
            # A phone prints device paths: map the sandbox back (line by line, so no path is split).
            for line in proc.stdout:
                write(line.replace(str(self.device_tmp).encode(), DEVICE_TMP.encode())
                      .replace(str(self.root).encode(), b""))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class _Connection:
    def __init__(self, server: SimulatedAdbd, sock: socket.socket):
        self.server = server
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_data = 4096
        self.token = b""
        self.online = False

    def send(self, message: p.Message) -> None:
        with self.send_lock:
            self.sock.sendall(message.pack())

    def run(self) -> None:
        handlers = {p.A_CNXN: self._cnxn, p.A_AUTH: self._auth, p.A_OPEN: self._open,
                    p.A_OKAY: self._okay, p.A_WRTE: self._wrte, p.A_CLSE: self._clse}
        while True:
            msg = p.read_message(self.sock)
            if not self.online and msg.command not in (p.A_CNXN, p.A_AUTH):
                continue  # adbd ignores everything else before the connection is authorized
            handler = handlers.get(msg.command)
            if handler is not None:
                handler(msg)

    def _cnxn(self, msg: p.Message) -> None:
        self.max_data = min(msg.arg1 or 4096, p.MAX_PAYLOAD)
        if self.server.faults.tls_only:
            self.send(p.Message(p.A_STLS, 0x01000000, 0))
            return
        if self.server.require_auth:
            self._send_token()
        else:
            self._connected()

    def _okay(self, msg: p.Message) -> None:
        stream = self.streams.get(msg.arg1)
        if stream is not None:
            stream.remote_id = msg.arg0
            stream.acks.put(True)

    def _wrte(self, msg: p.Message) -> None:
        stream = self.streams.get(msg.arg1)
        if stream is not None:
            stream.incoming.put(msg.data)
            self.send(p.Message(p.A_OKAY, stream.local_id, stream.remote_id))

    def _clse(self, msg: p.Message) -> None:
        stream = self.streams.pop(msg.arg1, None)
        if stream is not None:
            stream.incoming.put(None)
            stream.acks.put(False)
            if not stream.closed:
                stream.closed = True
                self.send(p.Message(p.A_CLSE, stream.local_id, stream.remote_id))

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(p.TOKEN_SIZE)
        self.send(p.Message(p.A_AUTH, p.AUTH_TOKEN, 0, self.token))

    def _connected(self) -> None:
        self.online = True
        self.send(p.Message(p.A_CNXN, p.VERSION, p.MAX_PAYLOAD, self.server.banner()))

    def _auth(self, msg: p.Message) -> None:
        if msg.arg0 == p.AUTH_SIGNATURE:
            if any(p.verify_token_signature(k, self.token, msg.data) for k in self.server.trusted):
                self._connected()
            else:
                self._send_token()  # adbd answers a wrong signature with a fresh token
        elif msg.arg0 == p.AUTH_RSAPUBLICKEY:
            self.server.prompts += 1
            if self.server.faults.reject_key or not self.server.accept_new_keys:
                # The user tapped "Deny": adbd drops the connection.
                time.sleep(0.2)
                raise ConnectionError("key rejected")
            self.server.trusted.append(p.decode_android_pubkey(msg.data))
            self._connected()

    def _open(self, msg: p.Message) -> None:
        destination = msg.data.rstrip(b"\0").decode("utf-8", "replace")
        server = self.server
        if server._count_service():
            raise ConnectionError("fault: dropped connection")
        server.commands.append(destination)
        if server.faults.slow_s:
            time.sleep(server.faults.slow_s)
        stream = _Stream(self.next_id, msg.arg0)
        self.next_id += 1
        if destination.startswith("shell:"):
            target = self._shell
        elif destination.startswith("sync:"):
            target = self._sync
        else:
            self.send(p.Message(p.A_CLSE, 0, msg.arg0))
            return
        self.streams[stream.local_id] = stream
        self.send(p.Message(p.A_OKAY, stream.local_id, stream.remote_id))
        threading.Thread(target=self._run_service, args=(target, stream, destination), daemon=True).start()

    def _run_service(self, target, stream: _Stream, destination: str) -> None:
        try:
            target(stream, destination)
        except (ConnectionError, OSError, EOFError):
            pass
        finally:
            if not stream.closed:
                stream.closed = True
                try:
                    self.send(p.Message(p.A_CLSE, stream.local_id, stream.remote_id))
                except OSError:
                    pass

    def _write(self, stream: _Stream, data: bytes) -> None:
        for start in range(0, len(data), self.max_data):
            if stream.closed:
                raise EOFError("stream closed by the host")
            self.send(p.Message(p.A_WRTE, stream.local_id, stream.remote_id,
                                data[start:start + self.max_data]))
            if not stream.acks.get(timeout=60):
                raise EOFError("stream closed by the host")

    def _read(self, stream: _Stream, size: int) -> bytes:
        while len(stream.buffer) < size:
            chunk = stream.incoming.get(timeout=60)
            if chunk is None:
                raise EOFError("stream closed by the host")
            stream.buffer += chunk
        data = bytes(stream.buffer[:size])
        del stream.buffer[:size]
        return data

    # -- services ------------------------------------------------------------------------------
    def _shell(self, stream: _Stream, destination: str) -> None:
        command = destination[len("shell:"):]
        if command.startswith(",") or (":" in command.split(" ", 1)[0] and command.startswith("v2")):
            command = command.split(":", 1)[1]  # shell,v2,raw:CMD (not advertised; tolerated)
        if not command.strip():
            self._write(stream, b"interactive shells are not simulated; pass a command\n")
            return
        self.server.run_shell(command, lambda data: self._write(stream, data))

    def _sync(self, stream: _Stream, destination: str) -> None:
        while True:
            request = self._read(stream, 8)
            ident, length = request[:4], struct.unpack("<I", request[4:])[0]
            if ident == b"QUIT":
                return
            arg = self._read(stream, length).decode("utf-8", "replace") if length < 1 << 16 else ""
            if ident == b"STAT":
                path = self.server.map_path(arg)
                try:
                    info = os.stat(path) if path else None
                except OSError:
                    info = None
                mode, size, mtime = (info.st_mode, info.st_size, int(info.st_mtime)) if info else (0, 0, 0)
                self._write(stream, b"STAT" + struct.pack("<3I", mode, size & 0xFFFFFFFF, mtime))
            elif ident == b"LIST":
                self._list(stream, arg)
            elif ident == b"SEND":
                self._receive_file(stream, arg)
            elif ident == b"RECV":
                self._send_file(stream, arg)
            else:
                self._fail(stream, f"unknown sync request {ident!r}")
                return

    def _fail(self, stream: _Stream, message: str) -> None:
        data = message.encode()
        self._write(stream, b"FAIL" + struct.pack("<I", len(data)) + data)

    def _list(self, stream: _Stream, device_path: str) -> None:
        path = self.server.map_path(device_path)
        out = bytearray()
        if path and path.is_dir():
            for entry in [".", "..", *sorted(os.listdir(path))]:
                info = os.stat(path / entry)
                name = entry.encode()
                out += b"DENT" + struct.pack("<4I", info.st_mode, info.st_size & 0xFFFFFFFF,
                                             int(info.st_mtime), len(name)) + name
        out += b"DONE" + struct.pack("<4I", 0, 0, 0, 0)
        self._write(stream, bytes(out))

    def _receive_file(self, stream: _Stream, spec: str) -> None:
        device_path, _, mode_text = spec.rpartition(",")
        path = self.server.map_path(device_path)
        chunks = bytearray()
        while True:
            ident, size = self._read(stream, 4), struct.unpack("<I", self._read(stream, 4))[0]
            if ident == b"DATA":
                chunks += self._read(stream, size)
            elif ident == b"DONE":
                mtime = size
                break
            else:
                self._fail(stream, f"expected DATA or DONE, got {ident!r}")
                return
        if path is None:
            self._fail(stream, f"couldn't create file: {device_path}: Permission denied")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".lutnas-sync")
            tmp.write_bytes(chunks)
            os.chmod(tmp, stat.S_IMODE(int(mode_text)) if mode_text.isdigit() else 0o644)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, path)
        except (OSError, ValueError) as exc:
            self._fail(stream, f"couldn't create file: {exc}")
            return
        self._write(stream, b"OKAY" + struct.pack("<I", 0))

    def _send_file(self, stream: _Stream, device_path: str) -> None:
        path = self.server.map_path(device_path)
        if path is None or not path.is_file():
            self._fail(stream, f"remote object '{device_path}' does not exist")
            return
        data = path.read_bytes()
        out = bytearray()
        for start in range(0, len(data), 64 * 1024):
            chunk = data[start:start + 64 * 1024]
            out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
        out += b"DONE" + struct.pack("<I", 0)
        self._write(stream, bytes(out))


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def install_runner_double(server: SimulatedAdbd, device_path: str = f"{DEVICE_TMP}/benchmark_model") -> None:
    """Put the runner double on the simulated phone, as a user who pushed benchmark_model would."""
    target = server.map_path(device_path)
    assert target is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNNER_DOUBLE, target)
    target.chmod(0o755)
