//! `chatbench k8s render`: the manifests of a sharded run on Kubernetes,
//! by the book — no scheduler of chatbench's own:
//!
//! - a ConfigMap with the scenario file;
//! - a PersistentVolumeClaim (ReadWriteMany) for the shards' results, or
//!   the user's own claim;
//! - an Indexed Job (`completionMode: Indexed`, `completions = parallelism
//!   = N`): pod I runs `chatbench run --shard $JOB_COMPLETION_INDEX/N
//!   --start-at T` with its own server nodes against the shared (external)
//!   MongoDB, writing to `/results/shard-I`. `backoffLimitPerIndex: 0`: a
//!   shard is never retried (a late rerun would not start together with
//!   the others) and one failed shard does not stop the rest; a shard that
//!   fails is missing from the merge, which fails the verdict. Shards spread
//!   over nodes (topology spread on the hostname);
//! - a merge Job whose init container waits until every shard wrote its
//!   `report.json` or the run's deadline passed, then `chatbench merge`:
//!   its exit code is the verdict.
//!
//! Pure: scenario text and options in, YAML out.

use crate::scenario::Scenario;
use serde_json::json;

/// Where the shards' MongoDB connection string comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MongoRef {
    Uri(String),
    /// A Secret's key (the URI holds credentials).
    Secret {
        name: String,
        key: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct RenderOptions {
    pub shards: u32,
    pub image: String,
    /// The one mode the shards run.
    pub mode: crate::scenario::Mode,
    /// When the shards start sending, ns since the Unix epoch.
    pub start_at_unix_ns: u64,
    pub mongo: MongoRef,
    pub kafka_bootstrap: Option<String>,
    pub namespace: Option<String>,
    pub seed: u64,
    /// CPU and memory each shard pod requests (and is limited to).
    pub cpu: String,
    pub memory: String,
    /// Use this existing claim for results instead of creating one.
    pub results_claim: Option<String>,
    pub storage_class: Option<String>,
}

/// What one shard pod holds and needs: its connections (the busiest
/// shard's: rooms go round-robin), its nodes' share, the open files each
/// process needs, and the memory the figures measured on one machine
/// give (`scenarios/scale/100k.yaml`: harness 15.6 KiB and node 25.1 KiB
/// per connection, gross; rounded up here, plus a base per process).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sizing {
    pub connections: u64,
    pub nodes: u64,
    pub per_node: u64,
    pub harness_files: u64,
    pub node_files: u64,
    pub memory_mib: u64,
}

const HARNESS_KIB_PER_CONNECTION: u64 = 16;
const NODE_KIB_PER_CONNECTION: u64 = 26;
const BASE_MIB_PER_PROCESS: u64 = 64;

pub(crate) fn sizing(scenario: &Scenario, shards: u32) -> Sizing {
    let rooms = scenario.workload.rooms.div_ceil(shards.max(1));
    let connections = scenario.workload.connections_in(rooms);
    let nodes = u64::from(scenario.topology.nodes.max(1));
    let per_node = connections.div_ceil(nodes);
    let kib = connections * HARNESS_KIB_PER_CONNECTION + nodes * per_node * NODE_KIB_PER_CONNECTION;
    Sizing {
        connections,
        nodes,
        per_node,
        harness_files: connections + crate::resources::FD_MARGIN,
        node_files: per_node + crate::resources::NODE_FD_MARGIN,
        memory_mib: kib.div_ceil(1024) + (nodes + 1) * BASE_MIB_PER_PROCESS,
    }
}

/// A Kubernetes memory quantity in MiB (`2Gi`, `1536Mi`, `4G`, bytes);
/// None for a form not read here (then nothing is checked).
fn quantity_mib(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().ok()?;
    let bytes = match unit {
        "" => n,
        "Ki" => n << 10,
        "Mi" => n << 20,
        "Gi" => n << 30,
        "Ti" => n << 40,
        "k" => n * 1_000,
        "M" => n * 1_000_000,
        "G" => n * 1_000_000_000,
        "T" => n * 1_000_000_000_000,
        _ => return None,
    };
    Some(bytes >> 20)
}

/// Kubernetes names: lower-case DNS-1123 labels.
pub(crate) fn dns_label(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    let out = if out.is_empty() { "run" } else { out };
    out.chars().take(30).collect::<String>().trim_end_matches('-').to_owned()
}

/// How long after the start the merge stops waiting for shards: the
/// sending window, the drain, and time to read history and write reports.
pub(crate) fn merge_deadline_s(scenario: &Scenario) -> u64 {
    let w = &scenario.workload;
    (w.duration.0 + w.drain_timeout.0).as_secs() + 300
}

fn rfc3339(unix_ns: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_ns as i64).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Shell-quote one word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The manifests, as one multi-document YAML stream.
pub(crate) fn render(scenario: &Scenario, scenario_text: &str, o: &RenderOptions) -> anyhow::Result<String> {
    if o.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    if let Some(fault) = scenario.shared_backend_fault() {
        return Err(anyhow::anyhow!(
            "the scenario has a {fault} fault; the shards share their backends, so a sharded run cannot restart them (run it in one process)"
        ));
    }
    if scenario.auth.as_ref().is_some_and(|a| !a.intruders.is_empty()) {
        anyhow::bail!("the scenario has auth.intruders, which run in one process for now (run it unsharded)");
    }
    if o.mode == crate::scenario::Mode::Kafka && o.kafka_bootstrap.is_none() && scenario.topology.kafka.bootstrap.is_none() {
        anyhow::bail!("kafka mode needs --kafka-bootstrap (the shards share one Kafka)");
    }
    let size = sizing(scenario, o.shards);
    if let Some(limit) = quantity_mib(&o.memory)
        && limit < size.memory_mib
    {
        anyhow::bail!(
            "each shard pod holds up to {} connections and {} node(s) of {} each: about {} MiB at the bytes per connection \
             measured on one machine, but --memory is {} ({limit} MiB); give --memory {}Mi or more, or more --shards",
            size.connections,
            size.nodes,
            size.per_node,
            size.memory_mib,
            o.memory,
            size.memory_mib.div_ceil(256) * 256
        );
    }
    let name = format!("chatbench-{}", dns_label(&scenario.name));
    let start = rfc3339(o.start_at_unix_ns / 1_000_000_000 * 1_000_000_000);
    let run_id = format!("at{}", o.start_at_unix_ns / 1_000_000_000 * 1_000);
    let labels = json!({"app.kubernetes.io/name": "chatbench", "app.kubernetes.io/instance": name, "chatbench/run-id": run_id});
    let meta = |suffix: &str| {
        let mut m = json!({"name": format!("{name}{suffix}"), "labels": labels});
        if let Some(ns) = &o.namespace {
            m["namespace"] = json!(ns);
        }
        m
    };
    let claim = o.results_claim.clone().unwrap_or_else(|| format!("{name}-results"));
    let volumes = json!([
        {"name": "scenario", "configMap": {"name": format!("{name}-scenario")}},
        {"name": "results", "persistentVolumeClaim": {"claimName": claim}},
    ]);
    let mounts = json!([
        {"name": "scenario", "mountPath": "/scenario", "readOnly": true},
        {"name": "results", "mountPath": "/results"},
    ]);
    let mongo_env = match &o.mongo {
        MongoRef::Uri(uri) => json!({"name": "MONGO_URI", "value": uri}),
        MongoRef::Secret { name, key } => json!({"name": "MONGO_URI", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}),
    };
    let mut env = vec![mongo_env, json!({"name": "RUST_LOG", "value": "warn"})];
    let mut kafka_flag = String::new();
    if let Some(b) = &o.kafka_bootstrap {
        env.push(json!({"name": "KAFKA_BOOTSTRAP", "value": b}));
        kafka_flag = " --kafka-bootstrap \"$KAFKA_BOOTSTRAP\"".into();
    }
    // A shard that produced a verdict (exit 0 or 1) completed its work: the
    // merged verdict is the merge Job's exit code. 2 and 3 fail the pod.
    let shard_script = format!(
        "chatbench run /scenario/scenario.yaml --quiet --shard \"$JOB_COMPLETION_INDEX/{n}\" --start-at {start} --run-id {run_id} \
         --mode {mode} --seed {seed} --provider external --mongo-uri \"$MONGO_URI\"{kafka_flag} \
         --out \"/results/shard-$JOB_COMPLETION_INDEX\"; code=$?; if [ $code -le 1 ]; then exit 0; fi; exit $code",
        n = o.shards,
        start = sh_quote(&start),
        mode = o.mode,
        seed = o.seed,
    );
    let resources = json!({"requests": {"cpu": o.cpu, "memory": o.memory}, "limits": {"cpu": o.cpu, "memory": o.memory}});
    let deadline_s = merge_deadline_s(scenario);
    let start_s = o.start_at_unix_ns / 1_000_000_000;
    let wait_script = format!(
        "deadline={d}; while [ \"$(ls /results/shard-*/report.json 2>/dev/null | wc -l)\" -lt {n} ] && [ \"$(date +%s)\" -lt $deadline ]; \
         do sleep 5; done; echo \"$(ls /results/shard-*/report.json 2>/dev/null | wc -l) of {n} shards reported\"",
        d = start_s + deadline_s,
        n = o.shards,
    );
    // Every shard's folder by name: one that never appeared is noted and
    // its shard is missing from the verdict.
    let merge_script =
        format!("chatbench merge --out /results/merged{}", (0..o.shards).map(|i| format!(" /results/shard-{i}")).collect::<String>());
    let mut docs = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("-scenario"),
        "data": {"scenario.yaml": scenario_text},
    })];
    if o.results_claim.is_none() {
        let mut spec = json!({"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(class) = &o.storage_class {
            spec["storageClassName"] = json!(class);
        }
        docs.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("-results"), "spec": spec}));
    }
    let shard_labels = json!({"app.kubernetes.io/name": "chatbench", "app.kubernetes.io/instance": name, "chatbench/role": "shard"});
    docs.push(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("-shards"),
        "spec": {
            "completionMode": "Indexed",
            "completions": o.shards,
            "parallelism": o.shards,
            "backoffLimitPerIndex": 0,
            "activeDeadlineSeconds": deadline_s + 900,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": shard_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": shard_labels},
                    }],
                    "containers": [{
                        "name": "shard",
                        "image": o.image,
                        "command": ["/bin/sh", "-c"],
                        "args": [shard_script],
                        "env": env,
                        "resources": resources,
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }));
    docs.push(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("-merge"),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_s + 1800,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "chatbench", "app.kubernetes.io/instance": name, "chatbench/role": "merge"}},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{
                        "name": "wait-for-shards",
                        "image": o.image,
                        "command": ["/bin/sh", "-c"],
                        "args": [wait_script],
                        "volumeMounts": mounts,
                    }],
                    "containers": [{
                        "name": "merge",
                        "image": o.image,
                        "command": ["/bin/sh", "-c"],
                        "args": [merge_script],
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }));
    let mut out = format!(
        "# chatbench {}: scenario {:?}, mode {}, {} shards starting {start}\n# apply: kubectl apply -f -; verdict: kubectl wait --for=condition=complete job/{name}-merge\n\
         # per shard pod: up to {} connections, {} node(s) of {}; open files: harness {}, each node {} (the pod's nofile limit); \
         memory about {} MiB (requested: {}); client sockets bind 127.0.0.x in the pod's own network namespace\n",
        env!("CARGO_PKG_VERSION"),
        scenario.name,
        o.mode,
        o.shards,
        size.connections,
        size.nodes,
        size.per_node,
        size.harness_files,
        size.node_files,
        size.memory_mib,
        o.memory,
    );
    // Plain quoted scalars: serde-saphyr 0.0.14 mis-indents the folded
    // block scalars it would pick for long strings inside sequences.
    let yaml_options = serde_saphyr::SerializerOptions { prefer_block_scalars: false, ..Default::default() };
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string_with_options(&doc, yaml_options).map_err(|e| anyhow::anyhow!("rendering YAML: {e}"))?);
    }
    Ok(out)
}

/// The documents of a rendered stream, parsed back (for tests and checks).
#[cfg(test)]
pub(crate) fn parse_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    yaml.split("\n---\n").skip(1).map(|doc| serde_saphyr::from_str::<serde_json::Value>(doc).map_err(anyhow::Error::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = "name: Smoke Test!\ntopology: {nodes: 1}\nmodes: [changestream]\nworkload: {rooms: 4, subscribers_per_room: 1, senders_per_room: 1, load: {open: {rate_per_s: 10}}, duration: 5s, drain_timeout: 10s}\n";

    fn options() -> RenderOptions {
        RenderOptions {
            shards: 3,
            image: "registry.example/chatbench:1".into(),
            mode: crate::scenario::Mode::Changestream,
            start_at_unix_ns: 1_795_726_800_000_000_000,
            mongo: MongoRef::Uri("mongodb://mongo:27017/?replicaSet=rs0".into()),
            kafka_bootstrap: None,
            namespace: Some("load".into()),
            seed: 7,
            cpu: "2".into(),
            memory: "2Gi".into(),
            results_claim: None,
            storage_class: None,
        }
    }

    fn scenario() -> Scenario {
        crate::scenario::parse_str(SCENARIO, "test.yaml").expect("a valid scenario")
    }

    #[test]
    fn a_million_connections_are_sized_per_pod_and_too_little_memory_is_refused() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/scale/1m.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let million = crate::scenario::parse_str(&text, "1m.yaml").unwrap();
        assert_eq!(million.workload.connections(), 1_000_000);
        let size = sizing(&million, 64);
        // 10,000 rooms over 64 shards: the busiest has 157 rooms of 100.
        assert_eq!((size.connections, size.nodes, size.per_node), (15_700, 2, 7_850));
        assert_eq!((size.harness_files, size.node_files), (15_956, 7_978));
        // 15,700 x 16 KiB + 2 x 7,850 x 26 KiB = 644 MiB, and 64 MiB for each of 3 processes.
        assert_eq!(size.memory_mib, 836);
        let o = RenderOptions { shards: 64, memory: "512Mi".into(), ..options() };
        let e = render(&million, &text, &o).unwrap_err().to_string();
        assert!(e.contains("15700 connections") && e.contains("about 836 MiB") && e.contains("--memory 1024Mi or more"), "{e}");
        let yaml = render(&million, &text, &RenderOptions { shards: 64, memory: "2Gi".into(), ..options() }).unwrap();
        assert!(
            yaml.contains("# per shard pod: up to 15700 connections, 2 node(s) of 7850; open files: harness 15956, each node 7978"),
            "{yaml}"
        );
        assert_eq!(parse_documents(&yaml).unwrap()[2]["spec"]["completions"], 64);
    }

    #[test]
    fn memory_quantities_are_read_in_mib() {
        assert_eq!(quantity_mib("2Gi"), Some(2048));
        assert_eq!(quantity_mib("1536Mi"), Some(1536));
        assert_eq!(quantity_mib("4G"), Some(3814));
        assert_eq!(quantity_mib("1073741824"), Some(1024));
        assert_eq!(quantity_mib("1.5Gi"), None, "not read: not checked");
    }

    #[test]
    fn an_indexed_job_of_n_shards_that_start_together_and_a_merge_that_waits_for_them() {
        let yaml = render(&scenario(), SCENARIO, &options()).unwrap();
        let docs = parse_documents(&yaml).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ConfigMap", "PersistentVolumeClaim", "Job", "Job"]);
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "load"));
        assert_eq!(docs[0]["data"]["scenario.yaml"], SCENARIO, "the scenario file goes in verbatim");
        let shards = &docs[2]["spec"];
        assert_eq!(shards["completionMode"], "Indexed");
        assert_eq!(shards["completions"], 3);
        assert_eq!(shards["parallelism"], 3);
        assert_eq!(shards["backoffLimitPerIndex"], 0);
        let script = shards["template"]["spec"]["containers"][0]["args"][0].as_str().unwrap();
        for part in [
            "--shard \"$JOB_COMPLETION_INDEX/3\"",
            "--start-at '2026-11-26T21:00:00Z'",
            "--run-id at1795726800000",
            "--mode changestream",
            "--seed 7",
            "--provider external --mongo-uri \"$MONGO_URI\"",
            "--out \"/results/shard-$JOB_COMPLETION_INDEX\"",
        ] {
            assert!(script.contains(part), "{part} in {script}");
        }
        let merge = &docs[3]["spec"]["template"]["spec"];
        let wait = merge["initContainers"][0]["args"][0].as_str().unwrap();
        assert!(wait.contains("-lt 3 ]") && wait.contains(&format!("deadline={}", 1_795_726_800 + 15 + 300)), "{wait}");
        assert_eq!(
            merge["containers"][0]["args"][0],
            "chatbench merge --out /results/merged /results/shard-0 /results/shard-1 /results/shard-2"
        );
    }

    #[test]
    fn secrets_claims_and_kafka_are_honoured_and_bad_asks_refused() {
        let mut o = options();
        o.mongo = MongoRef::Secret { name: "mongo".into(), key: "uri".into() };
        o.results_claim = Some("shared".into());
        o.mode = crate::scenario::Mode::Kafka;
        assert!(render(&scenario(), SCENARIO, &o).unwrap_err().to_string().contains("--kafka-bootstrap"));
        o.kafka_bootstrap = Some("kafka:9092".into());
        let docs = parse_documents(&render(&scenario(), SCENARIO, &o).unwrap()).unwrap();
        assert_eq!(docs.len(), 3, "no claim of its own");
        let pod = &docs[1]["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"], "mongo");
        assert!(pod["containers"][0]["args"][0].as_str().unwrap().contains("--kafka-bootstrap \"$KAFKA_BOOTSTRAP\""));
        assert_eq!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"], "shared");
        o.shards = 0;
        assert!(render(&scenario(), SCENARIO, &o).is_err());
        assert_eq!(dns_label("Smoke Test!"), "smoke-test");
        assert_eq!(dns_label("___"), "run");
    }
}
