"""Write a one-layer OCI image archive that `ctr images import` reads, with no Docker:
the pause and CoreDNS images of `make k8s-up`, which no registry can serve here.

python3 oci_image.py OUT.tar NAME ENTRYPOINT SRC:DST [SRC:DST ...]
"""

import hashlib
import io
import json
import sys
import tarfile


def blob(tar: tarfile.TarFile, data: bytes, media: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"mediaType": media, "digest": digest, "size": len(data)}


def layer(files: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for src, dst in files:
            info = t.gettarinfo(src, dst.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(src, "rb") as f:
                t.addfile(info, f)
    return buf.getvalue()


def main(out: str, name: str, entrypoint: str, *pairs: str) -> None:
    diff = layer([tuple(p.split(":", 1)) for p in pairs])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": "65532:65532"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(diff).hexdigest()]},
    }
    with tarfile.open(out, "w") as tar:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(
                tar, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
            ),
            "layers": [blob(tar, diff, "application/vnd.oci.image.layer.v1.tar")],
        }
        desc = blob(
            tar, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
        )
        desc["annotations"] = {"io.containerd.image.name": name}
        for fname, doc in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", {"schemaVersion": 2, "manifests": [desc]}),
        ):
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(*sys.argv[1:])
