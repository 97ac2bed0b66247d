"""Download the Lavalink plugins listed in plugins.txt into a directory, checking sha256.

Usage: python3 fetch_plugins.py PLUGINS_TXT DEST_DIR
Runs at image build time (stdlib only). Exits non-zero with one line naming the bad entry.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import sys
import urllib.request

LINE = re.compile(
    r"^(?P<group>[\w.-]+):(?P<artifact>[\w.-]+):(?P<version>[\w.+-]+)\s+"
    r"(?P<repo>https://\S+?)/?\s+sha256:(?P<sha>[0-9a-f]{64})$"
)


def parse(text: str) -> list[re.Match[str]]:
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LINE.match(line)
        if match is None:
            sys.exit(f"plugins.txt:{number}: expected 'group:artifact:version REPO_URL sha256:HEX', got {line!r}")
        entries.append(match)
    return entries


def fetch(entry: re.Match[str], dest: pathlib.Path) -> None:
    group, artifact, version = entry["group"], entry["artifact"], entry["version"]
    jar = f"{artifact}-{version}.jar"
    url = f"{entry['repo']}/{group.replace('.', '/')}/{artifact}/{version}/{jar}"
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (https only, by regex)
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha"]:
        sys.exit(f"plugin {group}:{artifact}:{version}: sha256 {digest} does not match the pin {entry['sha']}")
    (dest / jar).write_bytes(data)
    print(f"fetched {jar} ({len(data)} bytes)")


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: fetch_plugins.py PLUGINS_TXT DEST_DIR")
    entries = parse(pathlib.Path(argv[1]).read_text())
    dest = pathlib.Path(argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        fetch(entry, dest)
    print(f"{len(entries)} plugin(s) in {dest}")


if __name__ == "__main__":
    main(sys.argv)
