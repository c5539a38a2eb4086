"""A real Docker registry on 127.0.0.1, with GAR-style token auth, and test images for it.

Debian's ``docker-registry`` is the CNCF distribution registry (2.8): the same v2 API,
challenge and manifest semantics as Artifact Registry's Docker endpoint. It runs as a
subprocess with a generated config: filesystem storage in a temp dir, deletes enabled (so
tests can delete a manifest, like a GAR cleanup policy would), token auth pointed at a
:class:`~localcloud.registry_auth.RegistryTokenEndpoint`, and optionally a notification
endpoint (distribution's webhook, for a later GAR-notification bridge).

Test images are built in pure Python as an OCI image layout (one tiny layer, a config, a
manifest) and pushed with ``skopeo copy``, which speaks the registry's token protocol
just like ``docker push``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import gzip
import hashlib
import io
import json
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from shared.adapters.registry import parse_challenges

REGISTRY_BINARY = "docker-registry"
SKOPEO_BINARY = "skopeo"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


_running: set[LocalRegistry] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A failed test or Ctrl-C must not leave a registry holding its port after we exit."""
    for registry in list(_running):
        registry.stop(timeout=2.0)


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 now (the registry binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRegistry:
    """One ``docker-registry`` process; ``stop()`` and ``start()`` again keep port and storage.

    Keeping the port across a restart is what lets tests show a client recovering from a
    registry that went away, without the client learning a new address.
    """

    def __init__(
        self,
        *,
        token_realm: str,
        service: str,
        issuer: str,
        root_cert_pem: bytes,
        notifications_url: str | None = None,
        workdir: Path | None = None,
        port: int = 0,
        binary: str = REGISTRY_BINARY,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="localcloud-registry-"))
        self.port = port or free_port()
        self.binary = binary
        self.storage = self.workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "registry.log"
        cert_path = self.workdir / "token-issuer.pem"
        self._cert_path = cert_path
        cert_path.write_bytes(root_cert_pem)
        self.config_path = self.workdir / "config.yml"
        config = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": f"127.0.0.1:{self.port}",
                # Signs upload state between requests; random is fine for one process.
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {
                "token": {"realm": token_realm, "service": service, "issuer": issuer, "rootcertbundle": str(cert_path)}
            },
        }
        if notifications_url:
            config["notifications"] = {
                "endpoints": [
                    {
                        "name": "localcloud",
                        "url": notifications_url,
                        "timeout": "2s",
                        "threshold": 3,
                        "backoff": "1s",
                        "ignoredmediatypes": ["application/octet-stream"],
                    }
                ]
            }
        # JSON is YAML, and needs no YAML library.
        self.config_path.write_text(json.dumps(config, indent=2))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry host as image references spell it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def trust(self, root_cert_pem: bytes) -> None:
        """Replace the token issuer certificates the registry trusts, from the next ``start()``.

        The registry reads its ``rootcertbundle`` once at start, so a rotated issuer key
        invalidates every token signed by the old one only after a restart, as here.
        """
        self._cert_path.write_bytes(root_cert_pem)

    def start(self, timeout: float = 15.0) -> LocalRegistry:
        """Start the process and return once ``/v2/`` answers (a 401 challenge counts)."""
        if self.running:
            return self
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        _running.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1.0)
                return self
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"docker-registry did not answer within {timeout}s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL); storage stays for a later ``start()``."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def close(self) -> None:
        """Stop and, if this object made the working directory, remove it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- test images -------------------------------------------------------------------------


@dataclass(frozen=True)
class OciLayout:
    """An OCI image layout on disk holding one image under ``tag``."""

    path: Path
    tag: str
    manifest_digest: str


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return digest, len(data)


def build_oci_layout(path: Path, *, tag: str = "latest", content: bytes = b"hello from localcloud\n") -> OciLayout:
    """Write a one-layer image whose single file holds ``content``.

    Everything is deterministic (fixed mtimes, no gzip timestamp), so the same content
    always yields the same manifest digest and different content a different one.
    """
    path.mkdir(parents=True, exist_ok=True)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    diff_id = "sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()
    layer_digest, layer_size = _blob(path, gzip.compress(tar_bytes.getvalue(), mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "localcloud.registry.build_oci_layout"}],
    }
    config_digest, config_size = _blob(path, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _blob(path, json.dumps(manifest, sort_keys=True).encode())
    _tag_layout(path, tag, OCI_MANIFEST, manifest_digest, manifest_size)
    return OciLayout(path, tag, manifest_digest)


def _tag_layout(path: Path, tag: str, media_type: str, digest: str, size: int) -> None:
    """Write the layout's own ``index.json`` naming ``digest`` as ``tag``, and its ``oci-layout`` marker."""
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}))
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _image_manifest(path: Path, content: bytes, architecture: str) -> dict[str, Any]:
    """One platform's image (a layer holding ``content``), as the descriptor an index lists."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    diff_id = "sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()
    layer_digest, layer_size = _blob(path, gzip.compress(tar_bytes.getvalue(), mtime=0))
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_digest, config_size = _blob(path, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    digest, size = _blob(path, json.dumps(manifest, sort_keys=True).encode())
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "platform": {"architecture": architecture, "os": "linux"},
    }


def build_multi_platform_layout(
    path: Path,
    *,
    tag: str = "latest",
    content: bytes = b"hello from localcloud\n",
    architectures: tuple[str, ...] = ("amd64", "arm64"),
) -> tuple[OciLayout, tuple[str, ...]]:
    """Write an image index with one image per architecture, as ``docker buildx --platform`` builds.

    Copied with ``push_image(..., all_platforms=True)``, the registry receives each platform's
    manifest by digest and then the index by tag: a multi-platform push as GAR sees it
    (docs/external-apis.md §1.1). Returns the layout (``manifest_digest`` is the index's) and
    the platform manifests' digests.
    """
    path.mkdir(parents=True, exist_ok=True)
    children = [_image_manifest(path, content + arch.encode(), arch) for arch in architectures]
    image_index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    index_digest, index_size = _blob(path, json.dumps(image_index, sort_keys=True).encode())
    _tag_layout(path, tag, OCI_INDEX, index_digest, index_size)
    return OciLayout(path, tag, index_digest), tuple(c["digest"] for c in children)


def push_image(
    layout: OciLayout,
    *,
    registry_host: str,
    name: str,
    tag: str,
    username: str,
    password: str,
    timeout: float = 60.0,
    all_platforms: bool = False,
) -> str:
    """``skopeo copy`` the layout's image to ``REGISTRY_HOST/NAME:TAG``; return the pushed digest.

    ``all_platforms`` copies an index with every platform's image (``--all``) rather than the
    one image skopeo would pick for this machine.

    Credentials go through a temporary auth file rather than ``--dest-creds`` so that they
    never appear in a process listing.
    """
    with tempfile.TemporaryDirectory(prefix="localcloud-push-") as tmp:
        auth_file = Path(tmp) / "auth.json"
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        auth_file.write_text(json.dumps({"auths": {registry_host: {"auth": auth}}}))
        auth_file.chmod(0o600)
        digest_file = Path(tmp) / "digest"
        result = subprocess.run(
            [
                SKOPEO_BINARY,
                "--insecure-policy",
                "copy",
                "--quiet",
                *(["--all"] if all_platforms else []),
                "--dest-tls-verify=false",
                "--dest-authfile",
                str(auth_file),
                "--digestfile",
                str(digest_file),
                f"oci:{layout.path}:{layout.tag}",
                f"docker://{registry_host}/{name}:{tag}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy to {registry_host}/{name}:{tag} failed:\n{result.stderr[-2000:]}")
        return digest_file.read_text().strip()


def delete_manifest(
    registry_url: str, name: str, digest: str, *, username: str, password: str, timeout: float = 10.0
) -> None:
    """Delete a manifest by digest, as a cleanup policy or ``gcloud artifacts docker images delete`` would.

    Distribution requires the ``*`` action for DELETE, so this follows the challenge and
    asks the token endpoint for it with the given (admin) credentials.
    """
    url = f"{registry_url}/v2/{name}/manifests/{digest}"
    with requests.Session() as session:
        first = session.delete(url, timeout=timeout)
        if first.status_code == 401:
            bearer = next(
                (c for c in parse_challenges(first.headers.get("WWW-Authenticate", "")) if c.scheme == "bearer"), None
            )
            if bearer is None or "realm" not in bearer.params:
                raise RuntimeError(f"registry answered DELETE with 401 but no Bearer challenge: {first.headers}")
            params = {"scope": bearer.params.get("scope", f"repository:{name}:*")}
            if "service" in bearer.params:
                params["service"] = bearer.params["service"]
            token_response = session.get(
                bearer.params["realm"], params=params, auth=(username, password), timeout=timeout
            )
            token_response.raise_for_status()
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
            first = session.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        if first.status_code != 202:
            raise RuntimeError(f"deleting {name}@{digest} failed: HTTP {first.status_code} {first.text[:500]}")
