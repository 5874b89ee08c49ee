"""`make image`: packs the module as an OCI image that Istio's WasmPlugin `url: oci://...` can
pull, without a container engine. The layout is the Wasm image spec's "compat" variant: one
tar+gzip layer holding `plugin.wasm`, and the annotation `module.wasm.image/variant: compat`.

    python scripts/oci_image.py MODULE OUT_DIR TAG

writes an OCI image layout to OUT_DIR; push it with any OCI tool, for example
`skopeo copy oci:OUT_DIR:TAG docker://REGISTRY/canary-split:TAG`. The build is reproducible:
the same module gives the same digest.
"""

import gzip
import hashlib
import io
import json
import pathlib
import sys
import tarfile

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def layer(module: bytes) -> bytes:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o444, 0  # fixed metadata: reproducible
        tar.addfile(info, io.BytesIO(module))
    return gzip.compress(tar_bytes.getvalue(), mtime=0)


def write_blob(out: pathlib.Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def build(module_path: pathlib.Path, out: pathlib.Path, tag: str) -> dict:
    module = module_path.read_bytes()
    layer_bytes = layer(module)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer_bytes)).hexdigest()
    config = {"architecture": "wasm", "os": "wasip1", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": write_blob(out, canonical(config), CONFIG_MEDIA_TYPE),
        "layers": [write_blob(out, layer_bytes, LAYER_MEDIA_TYPE)],
        "annotations": {"module.wasm.image/variant": "compat"},
    }
    manifest_descriptor = write_blob(out, canonical(manifest), MANIFEST_MEDIA_TYPE)
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}, indent=1))
    return manifest_descriptor


if __name__ == "__main__":
    module_path, out, tag = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    descriptor = build(module_path, out, tag)
    print(f"{out}: OCI image {tag}, manifest {descriptor['digest']}")
    print(f"module sha256 (for an https url): {hashlib.sha256(module_path.read_bytes()).hexdigest()}")
    print(f"push: skopeo copy oci:{out}:{tag} docker://REGISTRY/canary-split:{tag}")
