"""What a measurement ran on, recorded beside every result so numbers can be compared across machines."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    target = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": target.type,
        "device_name": _device_name(target),
    }
    if hasattr(os, "getloadavg"):
        # Other work on the machine slows both sides of a ratio alike, but absolute seconds need this context.
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    return info


def _device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
