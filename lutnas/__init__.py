"""lutnas: on-device latency profiling and lookup tables for hardware-aware NAS on phones."""

__version__ = "0.1.0"
