//! Tests of the parts of a pull that need no registry: manifest kinds, schema 1 refusal,
//! platform selection, media type checks, and the store's piecewise blob writer (digest
//! and size mismatches leave nothing). The pull itself against a real registry is
//! tests/e2e/hyperctl-pull.sh.

use std::path::Path;

use oci_spec::image::ImageManifest;

use crate::digest::Digest;
use crate::registry::{
    check_image_manifest, parse_manifest, pick_platform, Fetched, Platform, RegistryError,
};
use crate::store::{Store, StoreError};

const REF: &str = "127.0.0.1:5000/x:t";

fn d(s: &str) -> String {
    Digest::of(s.as_bytes()).to_string()
}

fn manifest_json(media_type: Option<&str>, config_mt: &str, layer_mt: &str) -> String {
    let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType": "{m}","#));
    format!(
        r#"{{"schemaVersion": 2, {mt}
            "config": {{"mediaType": "{config_mt}", "digest": "{}", "size": 10}},
            "layers": [{{"mediaType": "{layer_mt}", "digest": "{}", "size": 20}}]}}"#,
        d("config"),
        d("layer")
    )
}

fn index_json(media_type: &str, platforms: &[(&str, &str, Option<&str>)]) -> String {
    let entries: Vec<String> = platforms
        .iter()
        .map(|(os, arch, variant)| {
            let v = variant.map_or(String::new(), |v| format!(r#", "variant": "{v}""#));
            format!(
                r#"{{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "{}", "size": 100,
                    "platform": {{"os": "{os}", "architecture": "{arch}"{v}}}}}"#,
                d(&format!("{os}/{arch}/{variant:?}"))
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion": 2, "mediaType": "{media_type}", "manifests": [{}]}}"#,
        entries.join(",")
    )
}

fn parse(body: &str) -> Result<Fetched, RegistryError> {
    parse_manifest(REF, &Digest::of(body.as_bytes()), body.as_bytes())
}

#[test]
fn manifests_and_indexes_are_told_apart() {
    for mt in [
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        None,
    ] {
        let body = manifest_json(
            mt,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        match parse(&body).unwrap() {
            Fetched::Manifest(m) => assert_eq!(m.layers().len(), 1),
            Fetched::Index(_) => panic!("{mt:?} taken for an index"),
        }
    }
    for mt in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        let body = index_json(mt, &[("linux", "amd64", None)]);
        assert!(matches!(parse(&body).unwrap(), Fetched::Index(i) if i.manifests().len() == 1));
    }
    // No mediaType (allowed by OCI): an index has "manifests".
    let body = r#"{"schemaVersion": 2, "manifests": []}"#;
    assert!(matches!(parse(body).unwrap(), Fetched::Index(_)));
}

#[test]
fn schema1_is_refused_clearly() {
    for body in [
        r#"{"schemaVersion": 1, "name": "x", "tag": "t", "fsLayers": []}"#,
        r#"{"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}"#,
        r#"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"}"#,
    ] {
        let err = parse(body).unwrap_err();
        assert!(matches!(err, RegistryError::Schema1 { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(REF) && text.contains("schema 1"), "{text}");
    }
}

#[test]
fn bad_manifests_are_refused_naming_the_digest() {
    for (body, want) in [
        ("not json", "not valid"),
        (r#"{"schemaVersion": 3}"#, "schemaVersion"),
        (r#"{"schemaVersion": 2}"#, "neither manifests nor config"),
        (
            r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": 5}"#,
            "as an image manifest",
        ),
        (
            r#"{"schemaVersion": 2, "mediaType": "application/vnd.cncf.helm.chart.v1+json"}"#,
            "application/vnd.cncf.helm.chart.v1+json",
        ),
    ] {
        let err = parse(body).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(want), "{body}: {text}");
        assert!(
            text.contains(&Digest::of(body.as_bytes()).to_string()),
            "{text}"
        );
    }
}

fn index(platforms: &[(&str, &str, Option<&str>)]) -> oci_spec::image::ImageIndex {
    let body = index_json("application/vnd.oci.image.index.v1+json", platforms);
    match parse(&body).unwrap() {
        Fetched::Index(i) => *i,
        Fetched::Manifest(_) => unreachable!(),
    }
}

#[test]
fn platform_is_picked_from_an_index() {
    let idx = index(&[
        ("linux", "arm", Some("v6")),
        ("linux", "arm", Some("v7")),
        ("linux", "amd64", None),
        ("linux", "arm64", Some("v8")),
        ("windows", "amd64", None),
    ]);
    let pick =
        |p: &str| pick_platform(&idx, &p.parse().unwrap()).map(|desc| desc.digest().to_string());
    assert_eq!(pick("linux/amd64"), Some(d("linux/amd64/None")));
    assert_eq!(pick("linux/arm64"), Some(d("linux/arm64/Some(\"v8\")")));
    assert_eq!(pick("linux/arm/v7"), Some(d("linux/arm/Some(\"v7\")")));
    assert_eq!(pick("linux/arm"), Some(d("linux/arm/Some(\"v6\")")));
    assert_eq!(pick("windows/amd64"), Some(d("windows/amd64/None")));
    assert_eq!(pick("linux/s390x"), None);
    assert_eq!(pick("linux/amd64/v3"), None);
    // No platform field at all (attestations): never picked.
    let bare = r#"{"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "size": 1}]}"#;
    let Fetched::Index(bare) = parse(bare).unwrap() else {
        unreachable!()
    };
    assert!(pick_platform(&bare, &Platform::default()).is_none());
}

#[test]
fn platforms_parse() {
    let p: Platform = "linux/arm64/v8".parse().unwrap();
    assert_eq!(
        (p.os.as_str(), p.arch.as_str(), p.variant.as_deref()),
        ("linux", "arm64", Some("v8"))
    );
    assert_eq!(p.to_string(), "linux/arm64/v8");
    assert_eq!(Platform::default().to_string(), "linux/amd64");
    for bad in [
        "",
        "linux",
        "linux/",
        "/amd64",
        "linux/amd64/v8/x",
        "Linux/amd64",
        "linux/amd 64",
    ] {
        let err = bad.parse::<Platform>().unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

fn manifest(config_mt: &str, layer_mt: &str) -> ImageManifest {
    match parse(&manifest_json(None, config_mt, layer_mt)).unwrap() {
        Fetched::Manifest(m) => *m,
        Fetched::Index(_) => unreachable!(),
    }
}

#[test]
fn only_container_images_are_accepted() {
    for (cmt, lmt) in [
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ] {
        check_image_manifest(REF, &manifest(cmt, lmt)).unwrap();
    }
    for (cmt, lmt, want) in [
        (
            "application/vnd.cncf.helm.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
            "config has media type",
        ),
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "cannot unpack",
        ),
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "cannot unpack",
        ),
    ] {
        let err = check_image_manifest(REF, &manifest(cmt, lmt)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(REF) && text.contains(want), "{text}");
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    (dir, store)
}

fn entries(p: &Path) -> usize {
    std::fs::read_dir(p).unwrap().count()
}

#[test]
fn blob_writer_stores_verified_content() {
    let (_dir, store) = store();
    let data = b"some layer bytes".repeat(1000);
    let digest = Digest::of(&data);
    let mut w = store
        .blob_writer(&digest, Some(data.len() as u64))
        .unwrap()
        .unwrap();
    for chunk in data.chunks(777) {
        w.write(chunk).unwrap();
    }
    assert_eq!(w.written(), data.len() as u64);
    let put = w.commit().unwrap();
    assert!(put.created);
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
    // Present now: no writer, nothing to download.
    assert!(store.blob_writer(&digest, None).unwrap().is_none());
    assert_eq!(entries(&store.root().join("tmp")), 0);
}

#[test]
fn blob_writer_rejects_a_digest_mismatch_and_keeps_nothing() {
    let (_dir, store) = store();
    let good = b"the real content";
    let digest = Digest::of(good);
    let mut w = store
        .blob_writer(&digest, Some(good.len() as u64))
        .unwrap()
        .unwrap();
    let mut tampered = good.to_vec();
    tampered[3] ^= 1;
    w.write(&tampered).unwrap();
    let err = w.commit().unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, actual }
            if expected == &digest && actual == &Digest::of(&tampered)),
        "{err}"
    );
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    assert!(!store.has_blob(&digest));
    assert_eq!(entries(&store.root().join("blobs/sha256")), 0);
    assert_eq!(entries(&store.root().join("tmp")), 0);
}

#[test]
fn blob_writer_refuses_more_or_fewer_bytes_than_announced() {
    let (_dir, store) = store();
    let data = b"0123456789";
    let digest = Digest::of(data);
    let mut w = store.blob_writer(&digest, Some(8)).unwrap().unwrap();
    w.write(&data[..5]).unwrap();
    let err = w.write(&data[5..]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 8,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );
    drop(w);
    let mut w = store.blob_writer(&digest, Some(12)).unwrap().unwrap();
    w.write(data).unwrap();
    let err = w.commit().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 12,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(!store.has_blob(&digest));
    assert_eq!(entries(&store.root().join("tmp")), 0);
}

#[test]
fn an_abandoned_blob_writer_leaves_nothing() {
    let (_dir, store) = store();
    let digest = Digest::of(b"never finished");
    let mut w = store.blob_writer(&digest, None).unwrap().unwrap();
    w.write(b"never").unwrap();
    assert_eq!(entries(&store.root().join("tmp")), 1);
    drop(w); // an interrupted download
    assert_eq!(entries(&store.root().join("tmp")), 0);
    assert!(!store.has_blob(&digest));
}

fn ctx() -> crate::registry::Ctx<'static> {
    crate::registry::Ctx {
        registry: "127.0.0.1:5000",
        repository: "x",
        reference: REF,
    }
}

fn envelope(code: &str) -> oci_client::errors::OciEnvelope {
    serde_json::from_str(&format!(
        r#"{{"errors": [{{"code": "{code}", "message": "m", "detail": null}}]}}"#
    ))
    .unwrap()
}

#[test]
fn registry_errors_name_reference_and_registry() {
    use crate::registry::classify;
    use oci_client::errors::OciDistributionError as E;
    let url = || "http://127.0.0.1:5000/v2/x/manifests/t".to_string();
    for code in ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"] {
        let e = classify(
            E::RegistryError {
                envelope: envelope(code),
                url: url(),
            },
            &ctx(),
        );
        assert_eq!(
            e.to_string(),
            format!("{REF} not found in 127.0.0.1:5000"),
            "{code}"
        );
    }
    let e = classify(
        E::ServerError {
            code: 404,
            url: url(),
            message: String::new(),
        },
        &ctx(),
    );
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    for e in [
        E::UnauthorizedError { url: url() },
        E::AuthenticationFailure("no".into()),
        E::RegistryError {
            envelope: envelope("DENIED"),
            url: url(),
        },
        E::ServerError {
            code: 403,
            url: url(),
            message: String::new(),
        },
    ] {
        let text = classify(e, &ctx()).to_string();
        assert!(
            text.contains("registry 127.0.0.1:5000 refused anonymous access to x (HTTP 401)"),
            "{text}"
        );
    }
    let e = classify(
        E::ServerError {
            code: 500,
            url: url(),
            message: "boom".into(),
        },
        &ctx(),
    );
    let text = e.to_string();
    assert!(
        text.starts_with("registry 127.0.0.1:5000: ")
            && text.contains("500")
            && text.contains("boom"),
        "{text}"
    );
}

#[test]
fn tls_failures_are_recognised() {
    use crate::registry::is_tls_failure;
    for t in [
        "client error (Connect): received corrupt message of type InvalidContentType",
        "invalid peer certificate: UnknownIssuer",
        "tls handshake eof",
    ] {
        assert!(is_tls_failure(t), "{t}");
    }
    for t in [
        "tcp connect error: Connection refused (os error 111)",
        "dns error: failed to lookup address information",
    ] {
        assert!(!is_tls_failure(t), "{t}");
    }
}
