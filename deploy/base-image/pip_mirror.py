#!/usr/bin/env python3
"""Serve this machine's pip configuration to ``docker build`` over loopback HTTP.

Machines without registry access for images often still have pip configured with local wheel folders and
indexes (``file://`` URLs, ``find-links`` paths, a ``constraint`` file) that a build container cannot see.
This reads ``pip config list``, serves every local path it names on ``127.0.0.1:PORT`` and writes the
matching ``--build-arg`` lines (``PIP_EXTRA_INDEX_URL=http://127.0.0.1:PORT/…`` …) to ``--args-file``; run
the build with ``--network host`` so the container reaches the server. Remote URLs are passed through.

    python3 deploy/base-image/pip_mirror.py --args-file /tmp/args &   # serves until killed
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shlex
import subprocess
import sys
import tempfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# pip option → the environment variable a build reads (the Dockerfile declares these as ARGs).
OPTIONS = {
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "find-links": "PIP_FIND_LINKS",
    "constraint": "PIP_CONSTRAINT",
    "trusted-host": "PIP_TRUSTED_HOST",
}
_LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


def pip_config() -> dict[str, list[str]]:
    """Values of the options above from every scope pip reads (env, global, site, user), in pip's order."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, list[str]] = {}
    for line in listed.splitlines():
        match = _LINE.match(line.strip())
        if match and match["key"] in OPTIONS:
            for item in match["value"].split():
                values = found.setdefault(match["key"], [])
                if item not in values:
                    values.append(item)
    return found


def local_path(item: str) -> Path | None:
    if item.startswith("file://"):
        return Path(unquote(urlparse(item).path))
    if item.startswith("/"):
        return Path(item)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free port).")
    parser.add_argument("--args-file", type=Path, required=True, help="Where to write NAME=VALUE build args.")
    options = parser.parse_args()

    served = Path(tempfile.mkdtemp(prefix="fedmedclip-pip-mirror-"))
    server = ThreadingHTTPServer(
        ("127.0.0.1", options.port),
        functools.partial(_QuietHandler, directory=str(served)),
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    lines = []
    for key, items in pip_config().items():
        rewritten = []
        for index, item in enumerate(items):
            path = local_path(item)
            if path is None:
                rewritten.append(item)
                continue
            if not path.exists():
                continue
            alias = f"{key}-{index}"
            if key.endswith("index-url"):
                # Index pages often link to files by relative URLs above the index (``../../files/…``):
                # serve the index's parent folder so those resolve too.
                os.symlink(path.parent, served / alias)
                rewritten.append(f"{base}/{alias}/{path.name}/")
            else:
                os.symlink(path, served / alias)
                rewritten.append(f"{base}/{alias}/" if path.is_dir() else f"{base}/{alias}")
        if rewritten:
            lines.append(f"{OPTIONS[key]}={' '.join(rewritten)}")
    if any(line.startswith(("PIP_INDEX_URL=", "PIP_EXTRA_INDEX_URL=", "PIP_FIND_LINKS=")) for line in lines):
        lines.append("PIP_TRUSTED_HOST=127.0.0.1")
    options.args_file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(f"pip mirror on {base}: {shlex.join(lines)}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    sys.exit(main())
