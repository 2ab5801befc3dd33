"""A simulated Android phone for tests and demos: adbd on loopback, a device profile, a runner double."""

from tests.adbd.server import DeviceProfile, Faults, SimulatedAdbd, install_runner_double

__all__ = ["DeviceProfile", "Faults", "SimulatedAdbd", "install_runner_double"]
