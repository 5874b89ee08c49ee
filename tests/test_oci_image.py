"""`make image` writes a valid OCI image layout in the Wasm image spec's compat variant, whose
one layer holds exactly the module as `plugin.wasm`, reproducibly."""

import gzip
import hashlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import oci_image  # noqa: E402

MODULE = ROOT / "target" / "wasm32-wasip1" / "release" / "canary_split.wasm"


def blob(layout: pathlib.Path, descriptor: dict) -> bytes:
    algorithm, digest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest and len(data) == descriptor["size"]
    return data


def test_image_layout_holds_the_module(tmp_path):
    oci_image.build(MODULE, tmp_path, "0.1.0")
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads((tmp_path / "index.json").read_text())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest = json.loads(blob(tmp_path, entry))
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    layer_bytes = blob(tmp_path, layer)
    config = json.loads(blob(tmp_path, manifest["config"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer_bytes)).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as tar:
        assert tar.getnames() == ["plugin.wasm"]
        assert tar.extractfile("plugin.wasm").read() == MODULE.read_bytes()


def test_image_is_reproducible(tmp_path):
    first = oci_image.build(MODULE, tmp_path / "a", "0.1.0")
    second = oci_image.build(MODULE, tmp_path / "b", "0.1.0")
    assert first["digest"] == second["digest"]


def test_a_standard_oci_tool_reads_and_copies_it(tmp_path):
    # skopeo checks every digest and size while copying, as a registry push would.
    oci_image.build(MODULE, tmp_path / "layout", "0.1.0")
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", f"oci:{tmp_path / 'layout'}:0.1.0", f"dir:{copied}"], check=True,
                   capture_output=True)
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'layout'}:0.1.0"], check=True,
                                          capture_output=True, text=True).stdout)
    assert (inspected["Architecture"], inspected["Os"]) == ("wasm", "wasip1")
    assert len(inspected["Layers"]) == 1
