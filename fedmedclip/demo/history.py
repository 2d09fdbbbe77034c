"""The demo's per-round history, read from the aggregator's run status (``runs status --json``).

Per closed round: the FAM version it produced, how long it stayed open, the bytes each site uploaded, and
the validation metrics each site reported in its update header (its own validation split, its locally
trained model: aggregate numbers only, never per image).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# What a site's update header carries (hospital_agent reports val_* on its validation split).
REPORTED_METRICS = {
    "val_zero_shot_acc": "zero_shot_acc",
    "val_head_acc": "head_acc",
    "val_ensemble_acc": "ensemble_acc",
}
_FRACTION = re.compile(r"\.(\d{6})\d+")  # protobuf JSON may print nanoseconds; datetime takes microseconds


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(_FRACTION.sub(r".\1", text).replace("Z", "+00:00"))


def round_history(status: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{round, version, close_s, bytes: {site: n}, metrics: {site: {zero_shot_acc, …}}}]`` per closed round."""
    history: list[dict[str, Any]] = []
    for item in status.get("rounds", []):
        if item.get("state") != "ROUND_STATE_CLOSED":
            continue
        accepted = [p for p in item.get("participants", []) if p.get("state") == "PARTICIPATION_STATE_ACCEPTED"]
        opened, closed = item.get("opened_at"), item.get("closed_at")
        close_s = (parse_timestamp(closed) - parse_timestamp(opened)).total_seconds() if opened and closed else None
        history.append(
            {
                "round": int(item.get("round", len(history) + 1)),
                "version": int(item.get("output_version", 0)),
                "close_s": close_s,
                "bytes": {p["site"]: int(p.get("payload_bytes", 0)) for p in accepted},
                "metrics": {
                    p["site"]: {
                        short: float(p["metrics"][wire])
                        for wire, short in REPORTED_METRICS.items()
                        if wire in p.get("metrics", {})
                    }
                    for p in accepted
                },
            }
        )
    return history
