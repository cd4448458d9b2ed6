"""The FPGA device database (``tokensift/data/devices.json``): capacities, family and a typical clock.

Names are looked up case-insensitively, with or without separators (``zcu102``, ``pynq-z2``,
``PYNQ_Z2``, ``alveo-u250``); an unknown name fails with the list of known ones.

>>> d = get_device("zcu102")
>>> d.name, d.family, d.dsp, d.bram36, d.clock_mhz
('ZCU102', 'xcup', 2520, 912, 300.0)
>>> get_device("ecp5-85f").ebr
208
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources as importlib_resources

from tokensift.errors import TokensiftError

__all__ = ["Device", "UnknownDeviceError", "get_device", "list_devices", "load_devices"]


class UnknownDeviceError(TokensiftError, ValueError):
    """A device name that is not in the device database."""


@dataclass(frozen=True)
class Device:
    """One device: its capacities in the units the resource model counts."""

    name: str
    part: str
    family: str
    dsp: int
    lut: int
    ff: int
    clock_mhz: float
    bram36: int = 0
    uram: int = 0
    ebr: int = 0
    dram_peak_gbps: float = 0.0
    dram_efficiency: float = 0.75
    dram_source: str = ""

    @property
    def dram_gbps(self) -> float:
        """The realistic DRAM bandwidth in GB/s: the board's peak x the sustained fraction assumed for long
        sequential bursts (see ``_about_dram`` in the data file)."""
        return self.dram_peak_gbps * self.dram_efficiency

    def dram_bytes_per_cycle(self, clock_mhz: float) -> float:
        """The realistic DRAM bandwidth in bytes per cycle of a ``clock_mhz`` fabric clock.

        >>> round(get_device("zcu102").dram_bytes_per_cycle(300), 1)
        48.0
        """
        if not clock_mhz > 0:
            raise ValueError(f"clock_mhz must be positive, not {clock_mhz}")
        return self.dram_gbps * 1e3 / clock_mhz

    def capacity(self) -> dict[str, int]:
        """Capacities keyed like :meth:`tokensift.hw.common.resources.Resources.as_dict` for this family."""
        if self.family == "ecp5":
            return {"dsp": self.dsp, "ebr": self.ebr, "lut": self.lut, "ff": self.ff}
        return {"dsp": self.dsp, "bram36": self.bram36, "uram": self.uram, "lut": self.lut, "ff": self.ff}

    def as_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "family": self.family, "clock_mhz": self.clock_mhz,
                **self.capacity(), "dram_gbps": self.dram_gbps, "dram_source": self.dram_source}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).upper()


@cache
def load_devices() -> dict[str, Device]:
    """All devices of the data file, by their canonical name."""
    path = importlib_resources.files("tokensift") / "data" / "devices.json"
    raw = json.loads(path.read_text())
    devices = {}
    for name, entry in raw["devices"].items():
        devices[name] = Device(name=name, part=entry["part"], family=entry["family"], dsp=int(entry["dsp"]),
                               lut=int(entry["lut"]), ff=int(entry["ff"]), clock_mhz=float(entry["clock_mhz"]),
                               bram36=int(entry.get("bram36", 0)), uram=int(entry.get("uram", 0)),
                               ebr=int(entry.get("ebr", 0)), dram_peak_gbps=float(entry["dram_peak_gbps"]),
                               dram_efficiency=float(entry["dram_efficiency"]), dram_source=entry["dram_source"])
    return devices


@cache
def _index() -> dict[str, str]:
    path = importlib_resources.files("tokensift") / "data" / "devices.json"
    raw = json.loads(path.read_text())
    index = {_key(name): name for name in raw["devices"]}
    for alias, name in raw.get("aliases", {}).items():
        index.setdefault(_key(alias), name)
    return index


def list_devices() -> list[str]:
    return list(load_devices())


def get_device(name) -> Device:
    """The device called ``name`` (case-insensitive; ``-``, ``_`` and spaces ignored)."""
    if isinstance(name, Device):
        return name
    if not isinstance(name, str):
        raise TypeError(f"device must be a name (string), not {type(name).__name__}")
    canonical = _index().get(_key(name))
    if canonical is None:
        raise UnknownDeviceError(f"unknown device {name!r}; choose one of {', '.join(list_devices())}")
    return load_devices()[canonical]
