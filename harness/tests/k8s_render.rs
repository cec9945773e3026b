//! `chatbench k8s render` output checked by a real schema validator:
//! kubernetes-validate (installed, pinned, by `ci/setup k8s`) in strict
//! mode against the oldest supported Kubernetes (1.29: backoffLimitPerIndex)
//! and the newest it knows. A deliberately broken copy must fail, so the
//! validation cannot pass vacuously.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");
const VERSIONS: [&str; 2] = ["1.29.0", "1.34.0"];

fn validator() -> PathBuf {
    let cache = chatbench::provider::cache_dir();
    let bin = cache.join("k8s-venv/bin/kubernetes-validate");
    assert!(bin.exists(), "{} is missing: run `ci/setup k8s` (the README's test command does)", bin.display());
    bin
}

fn validate(file: &Path, version: &str) -> Output {
    Command::new(validator()).args(["--strict", "-k", version]).arg(file).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn render(args: &[&str]) -> Output {
    Command::new(BIN).arg("k8s").arg("render").args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).output().unwrap()
}

fn rendered(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let o = render(args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let file = dir.join(name);
    std::fs::write(&file, &o.stdout).unwrap();
    file
}

#[test]
fn rendered_manifests_pass_strict_schema_validation_and_a_broken_copy_fails() {
    let dir = tempfile::tempdir().unwrap();
    let changestream = rendered(
        dir.path(),
        "changestream.yaml",
        &[
            "scenarios/smoke.yaml",
            "--shards",
            "4",
            "--image",
            "registry.example/chatbench:0.1.0",
            "--mongo-uri",
            "mongodb://mongo:27017/?replicaSet=rs0",
        ],
    );
    let kafka = rendered(
        dir.path(),
        "kafka.yaml",
        &[
            "scenarios/compare.yaml",
            "--shards",
            "3",
            "--mode",
            "kafka",
            "--image",
            "registry.example/chatbench:0.1.0",
            "--mongo-uri-secret",
            "mongo/uri",
            "--kafka-bootstrap",
            "kafka:9092",
            "--namespace",
            "bench",
            "--results-claim",
            "shared-results",
            "--start-at",
            "2026-12-01T12:00:00Z",
        ],
    );
    // 1,000,000 connections over 64 shard pods, sized per pod.
    let million = rendered(
        dir.path(),
        "million.yaml",
        &[
            "scenarios/scale/1m.yaml",
            "--shards",
            "64",
            "--memory",
            "2Gi",
            "--image",
            "registry.example/chatbench:0.1.0",
            "--mongo-uri-secret",
            "mongo/uri",
        ],
    );
    assert!(std::fs::read_to_string(&million).unwrap().contains("# per shard pod: up to 15700 connections"));
    for file in [&changestream, &kafka, &million] {
        for version in VERSIONS {
            let o = validate(file, version);
            assert!(o.status.success(), "{} against {version}: {}", file.display(), text(&o));
            assert_eq!(text(&o).matches("passed for resource").count(), if file == &kafka { 3 } else { 4 }, "{}", text(&o));
        }
    }
    // A misspelt field (strict mode) and a wrong type must each fail.
    let good = std::fs::read_to_string(&changestream).unwrap();
    for (what, from, to) in
        [("unknown field", "completionMode: Indexed", "completionMod: Indexed"), ("wrong type", "completions: 4", "completions: four")]
    {
        assert!(good.contains(from), "{from} is rendered");
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, good.replacen(from, to, 1)).unwrap();
        let o = validate(&broken, "1.34.0");
        assert!(!o.status.success(), "a manifest with a {what} passed validation: {}", text(&o));
    }
}

#[test]
fn every_shard_gets_its_index_one_start_and_the_merge_names_every_shard() {
    let o = render(&[
        "scenarios/smoke.yaml",
        "--shards",
        "3",
        "--image",
        "img",
        "--mongo-uri",
        "mongodb://m:27017/",
        "--start-at",
        "2026-12-01T12:00:00Z",
        "--seed",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let yaml = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "completionMode: Indexed",
        "completions: 3",
        "parallelism: 3",
        r#"--shard \"$JOB_COMPLETION_INDEX/3\""#,
        "--start-at '2026-12-01T12:00:00Z'",
        "--run-id at1796126400000",
        "--seed 9",
        "--provider external",
        "chatbench merge --out /results/merged /results/shard-0 /results/shard-1 /results/shard-2",
    ] {
        assert!(yaml.contains(needle), "{needle} missing from:\n{yaml}");
    }
}

#[test]
fn scenarios_a_sharded_run_cannot_honour_are_refused_with_the_reason() {
    for (args, reason) in [
        (vec!["scenarios/compare.yaml", "--shards", "2", "--image", "i", "--mongo-uri", "m"], "give --mode"),
        (vec!["scenarios/smoke.yaml", "--shards", "0", "--image", "i", "--mongo-uri", "m"], "--shards must be at least 1"),
        (vec!["scenarios/compare.yaml", "--mode", "kafka", "--shards", "2", "--image", "i", "--mongo-uri", "m"], "--kafka-bootstrap"),
        (
            vec!["scenarios/faults/restart-mongo.yaml", "--mode", "changestream", "--shards", "2", "--image", "i", "--mongo-uri", "m"],
            "restart_mongo",
        ),
        (
            vec!["scenarios/faults/nemesis.yaml", "--mode", "changestream", "--shards", "2", "--image", "i", "--mongo-uri", "m"],
            "restart_mongo",
        ),
        (vec!["scenarios/auth-intruders.yaml", "--shards", "2", "--image", "i", "--mongo-uri", "m"], "auth.intruders"),
    ] {
        let o = render(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(reason), "{args:?}: {}", text(&o));
    }
}
