#!/usr/bin/env python3
"""Write a two-layer `docker save` archive: `make_image.py ROOTFS_DIR MIB OUT.tar NAME:TAG`.

Layer 1 is the folder ROOTFS_DIR (the busybox root file system), layer 2 holds MIB files of
1 MiB random bytes under /data (incompressible, so compression cannot shrink the work).
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_from_dir(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(root)):
            t.add(os.path.join(root, name), arcname=name)
    return buf.getvalue()


def layer_random(mib):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo("data")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        t.addfile(d)
        for i in range(mib):
            data = os.urandom(1 << 20)
            info = tarfile.TarInfo(f"data/blob-{i:03}")
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    root, mib, out, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    layers = [layer_from_dir(root), layer_random(mib)]
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "busybox rootfs"}, {"created_by": f"{mib} MiB random"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{
        "Config": config_name,
        "RepoTags": [ref],
        "Layers": [d.split(":")[1] + "/layer.tar" for d in diff_ids],
    }]
    with tarfile.open(out, "w") as t:
        def put(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
        put(config_name, config)
        for d, l in zip(diff_ids, layers):
            put(d.split(":")[1] + "/layer.tar", l)
        put("manifest.json", json.dumps(manifest).encode())
    print(f"{out}: {os.path.getsize(out) / 1e6:.1f} MB, layers {[len(l) for l in layers]}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
