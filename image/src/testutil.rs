//! Builders for test images: layers, configs, OCI layouts, OCI tarballs and docker-archives,
//! all made by the tests themselves.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::digest::Digest;
pub(crate) use crate::unpack::tests::TarBuilder;

/// A small two-layer image: busybox-like files, then a layer that deletes and adds.
pub(crate) struct TestImage {
    pub layers: Vec<Vec<u8>>, // as stored (possibly compressed)
    pub diff_ids: Vec<Digest>,
    pub config: Vec<u8>,
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

impl TestImage {
    pub fn new(config_extra: serde_json::Value) -> Self {
        let l1 = TarBuilder::default()
            .dir("bin/")
            .file_mode("bin/busybox", 0o755, b"\x7fELF busybox")
            .hardlink("bin/sh", "bin/busybox")
            .dir("etc/")
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n")
            .file("etc/group", b"root:x:0:\nwheel:x:10:app\nnogroup:x:65534:\napp:x:1000:\naudio:x:29:root,app\n")
            .file("etc/old", b"old")
            .dir("run/")
            .dir("var/")
            .symlink("var/run", "/run")
            .finish();
        let l2 = TarBuilder::default()
            .file("etc/.wh.old", b"")
            .file("var/run/app.pid", b"1")
            .file("hello", b"hi")
            .finish();
        let diff_ids = vec![Digest::of(&l1), Digest::of(&l2)];
        let mut config = json!({
            "created": "2026-11-27T20:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "GREETING=hello"],
                "Cmd": ["sh"],
                "WorkingDir": "/",
                "ExposedPorts": {"80/tcp": {}},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            "history": [{"created_by": "test"}],
        });
        if let (Some(c), Some(extra)) = (config["config"].as_object_mut(), config_extra.as_object())
        {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        Self {
            layers: vec![gzip(&l1), l2],
            diff_ids,
            config: serde_json::to_vec(&config).unwrap(),
        }
    }

    fn layer_descs(&self) -> Vec<serde_json::Value> {
        let types = [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar",
        ];
        self.layers
            .iter()
            .zip(types)
            .map(|(l, t)| json!({"mediaType": t, "digest": Digest::of(l).to_string(), "size": l.len()}))
            .collect()
    }

    pub fn manifest(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(&self.config).to_string(), "size": self.config.len()},
            "layers": self.layer_descs(),
        }))
        .unwrap()
    }

    /// Writes an OCI image layout into `dir`. With `nested`, index.json points to an
    /// image index listing an arm64 decoy and the amd64 manifest.
    pub fn write_layout(&self, dir: &Path, ref_name: Option<&str>, nested: bool) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = Digest::of(data);
            std::fs::write(blobs.join(d.hex()), data).unwrap();
            d
        };
        put(&self.config);
        for l in &self.layers {
            put(l);
        }
        let manifest = self.manifest();
        let md = put(&manifest);
        let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": md.to_string(), "size": manifest.len()});
        if nested {
            let decoy = put(b"{\"not\": \"a manifest\"}");
            let inner = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": decoy.to_string(), "size": 22,
                     "platform": {"architecture": "arm64", "os": "linux"}},
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len(),
                     "platform": {"architecture": "amd64", "os": "linux"}},
                ],
            }))
            .unwrap();
            let id = put(&inner);
            desc = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id.to_string(), "size": inner.len()});
        }
        if let Some(r) = ref_name {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": r});
        }
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(
            dir.join("oci-layout"),
            br#"{"imageLayoutVersion": "1.0.0"}"#,
        )
        .unwrap();
    }

    /// A `docker save` archive in the old form: `<id>/layer.tar` (uncompressed), `<id>.json`
    /// config, manifest.json, repositories; the second layer.tar repeated through a symlink
    /// as docker does for a shared layer.
    pub fn docker_archive_old(&self, tags: &[&str]) -> Vec<u8> {
        let mut tb = TarBuilder::default();
        let cd = Digest::of(&self.config);
        let mut layer_paths = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let raw = if i == 0 { gunzip(l) } else { l.clone() };
            let id = format!("{:064x}", i + 1);
            tb.dir(&format!("{id}/"))
                .file(&format!("{id}/VERSION"), b"1.0")
                .file(&format!("{id}/layer.tar"), &raw);
            layer_paths.push(format!("{id}/layer.tar"));
        }
        let dup = format!("{:064x}", 9);
        tb.dir(&format!("{dup}/")).symlink(
            &format!("{dup}/layer.tar"),
            &format!("../{}", layer_paths[1]),
        );
        layer_paths.push(format!("{dup}/layer.tar"));
        tb.file(&format!("{}.json", cd.hex()), &self.config);
        let manifest = json!([{"Config": format!("{}.json", cd.hex()), "RepoTags": tags, "Layers": [&layer_paths[0], &layer_paths[2]]}]);
        tb.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        tb.file("repositories", b"{}");
        tb.finish()
    }

    /// A `docker save` archive in the new (docker 25+) form: an OCI layout plus manifest.json.
    pub fn docker_archive_new(&self, tags: &[&str]) -> Vec<u8> {
        let mut tb = TarBuilder::default();
        let cd = Digest::of(&self.config);
        tb.dir("blobs/").dir("blobs/sha256/");
        tb.file(&format!("blobs/sha256/{}", cd.hex()), &self.config);
        let mut layer_paths = Vec::new();
        for l in &self.layers {
            let d = Digest::of(l);
            tb.file(&format!("blobs/sha256/{}", d.hex()), l);
            layer_paths.push(format!("blobs/sha256/{}", d.hex()));
        }
        let manifest = json!([{"Config": format!("blobs/sha256/{}", cd.hex()), "RepoTags": tags, "Layers": layer_paths}]);
        tb.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        tb.file("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
        let manifest = self.manifest();
        let md = Digest::of(&manifest);
        tb.file(&format!("blobs/sha256/{}", md.hex()), &manifest);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v2"},
        }]});
        tb.file("index.json", &serde_json::to_vec(&index).unwrap());
        tb.finish()
    }
}

pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Tars up a directory (for OCI tarballs).
pub(crate) fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// Number of blobs in a store.
pub(crate) fn blob_count(store: &crate::Store) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}
