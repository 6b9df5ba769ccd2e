"""Pack files into an OCI image archive that `ctr images import` accepts.

Nothing can be pulled from public registries on these machines, so the node's sandbox
(pause) image and the tests' busybox image are made here from local binaries: one
uncompressed tar layer, an image config, a manifest and an index, in an OCI image layout
inside a tar. The archive is deterministic (fixed mtimes, sorted entries), so the same
inputs give the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class ImageSpec:
    """An image of a few files: `files` maps a path in the image to a host file,
    `symlinks` a path in the image to its target."""

    name: str  # the full reference, e.g. loopline.local/pause:3.10
    files: dict[str, Path]
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    directories: tuple[str, ...] = ()


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def layer_tar(spec: ImageSpec) -> bytes:
    """The single layer: parent directories first, then files and symlinks, sorted."""
    paths = {p.strip("/") for p in [*spec.files, *spec.symlinks]}
    dirs = {d.strip("/") for d in spec.directories}
    for path in paths:
        parent = Path(path).parent
        while str(parent) not in (".", ""):
            dirs.add(str(parent))
            parent = parent.parent
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            _add(tar, info)
        for path, source in sorted(spec.files.items()):
            data = Path(source).read_bytes()
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o755 if Path(source).stat().st_mode & 0o111 else 0o644
            _add(tar, info, data)
        for path, target in sorted(spec.symlinks.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mode = 0o777
            _add(tar, info)
    return buffer.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def archive(spec: ImageSpec) -> bytes:
    """The OCI image layout of `spec`, as a tar `ctr images import` reads; the index names
    the image (`io.containerd.image.name`) so it is imported under `spec.name`."""
    layer_digest, layer = _blob(layer_tar(spec))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd or None,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "loopline.cluster.node.oci", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_digest, config_bytes = _blob(_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": {"mediaType": _CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": _LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(_json(manifest))
    tag = spec.name.rsplit(":", 1)[1] if ":" in spec.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": _INDEX,
        "manifests": [
            {
                "mediaType": _MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json(index)),
        ]
        for digest, data in (
            (layer_digest, layer),
            (config_digest, config_bytes),
            (manifest_digest, manifest_bytes),
        ):
            entries.append((f"blobs/sha256/{digest.split(':', 1)[1]}", data))
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            _add(tar, info)
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            _add(tar, info, data)
    return buffer.getvalue()


def pause_image(pause_binary: Path, name: str) -> ImageSpec:
    """The pod sandbox image: our static pause program as /pause."""
    return ImageSpec(name=name, files={"/pause": pause_binary}, entrypoint=["/pause"])


BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
BUSYBOX_APPLETS = (
    "sh", "sleep", "httpd", "wget", "nslookup", "cat", "echo", "ls", "ps", "kill", "hostname",
    "env", "true", "false", "mkdir", "grep", "id", "ip", "nc", "printf", "test", "date",
)  # fmt: skip


def busybox_image(name: str, busybox: Path = BUSYBOX) -> ImageSpec:
    """A tiny image of Debian's static busybox for test pods: /bin/busybox and applets."""
    return ImageSpec(
        name=name,
        files={"/bin/busybox": busybox},
        symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
        directories=("tmp", "etc", "var/www"),
        entrypoint=[],
        cmd=["/bin/sh"],
    )
