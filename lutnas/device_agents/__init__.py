"""Measuring model files on devices: transports carry commands, runners time models.

Knows no search spaces: it measures files. Imports nothing of lutnas but `lutnas.errors`.

- `base.py`: the data and the contract: `DeviceInfo`, `RunSettings` (validated when constructed),
  `ModelFile`, `Measurement`, `RunnerInfo`, `DeviceAgent`, `parse_cores`.
- `policy.py`: retry with back-off (transient failures only) and the thermal cool-down wait.
- `runners.py`: one record per runner program (`benchmark_model`, `onnxruntime_perf_test`,
  lutnas's `local_worker`): its arguments and its parser; `runner_output.py` holds the pure
  parsers of what the binaries print.
- `transport.py`: the shell-transport contract (run a command, push a file).
- `remote.py`: `RemoteAgent`, any device behind a shell transport, with a `Platform` record.
- `adb.py` (+ `adb_keys.py`): the ADB transport and `AdbAgent`; `android.py` the Android
  platform (probe, fingerprint); `kernel.py` what /proc and /sys say on any Linux kernel.
- `ssh.py`: the SSH transport (asyncssh) and `SshAgent` for Linux boards; `linux.py` the Linux
  platform (probe, fingerprint).
- `local.py`: `LocalAgent`, the host: a local process transport running `local_worker.py`;
  `runtimes.py` finds the host's TFLite interpreter.
- `factory.py`: `open_agent(address, AgentOptions)`, one entry per kind of address.
"""
