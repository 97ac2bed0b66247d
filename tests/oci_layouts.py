"""Make small OCI image layouts by hand, for the comparison tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import tarfile
from typing import Any

File = tuple[bytes, int, int]  # content, mode, mtime


def _blob(root: pathlib.Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def layer_bytes(files: dict[str, File]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, (content, mode, mtime) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, mtime
            archive.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_layout(root: pathlib.Path, layers: list[dict[str, File]], env: list[str] | None = None,
                created: str = "1970-01-01T00:00:00Z") -> pathlib.Path:
    layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(root, layer_bytes(files))}
                   for files in layers]
    config = {"architecture": "amd64", "os": "linux", "created": created,
              "config": {"Env": env or ["PATH=/usr/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": layer_descs}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "platform": {"architecture": "amd64", "os": "linux"}, **_blob(root, json.dumps(manifest).encode())}
    attestation = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                   **_blob(root, json.dumps({"schemaVersion": 2, "nonce": str(root)}).encode())}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc, attestation]}
    index_desc = {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(root, json.dumps(index).encode())}
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [index_desc]}))
    return root
