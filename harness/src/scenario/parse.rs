//! Reading a scenario: YAML through serde-saphyr (which reports the line of
//! a syntax or type error itself), then the checks serde cannot express,
//! each reported at the line of the offending key.

use super::model::*;
use crate::protocol::Demands;
use chatbench_wire::limits::MAX_BODY_BYTES;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {file} line {line}: {message}")]
    Invalid { file: String, line: u64, message: String },
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { file: file.clone(), source })?;
    parse_str(&text, &file)
}

pub fn parse_str(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let invalid = |line, message| ScenarioError::Invalid { file: file.to_owned(), line, message };
    let Tracked(scenario) = serde_saphyr::from_str::<Tracked>(text).map_err(|e| {
        let rendered = e.to_string();
        match rendered.split_once(PATH_MARK) {
            // A data error: serde-saphyr has no location for it, so find the
            // key path serde_path_to_error recorded.
            Some((path, message)) => {
                let message = strip_location_suffix(message);
                // List indexes (`faults[0]`) are dropped: the first item is found.
                let mut segments: Vec<&str> =
                    path.split('.').map(|s| s.split('[').next().unwrap_or(s)).filter(|s| !s.is_empty() && *s != "?").collect();
                if let Some(unknown) = unknown_field(&message) {
                    segments.push(unknown);
                }
                // A conversion error names the key it is about.
                let (path, message) = match message.split_once(KEY_MARK) {
                    Some((key, message)) => {
                        segments.push(key);
                        (format!("{path}.{key}"), message.to_owned())
                    }
                    None => (path.to_owned(), message.clone()),
                };
                let shown = if path.is_empty() || path == "." { String::new() } else { format!("{path}: ") };
                invalid(line_of(text, &segments), format!("{shown}{message}"))
            }
            // A YAML syntax error: serde-saphyr knows the line.
            None => invalid(e.location().map_or(0, |l| l.line()), strip_location_suffix(&rendered)),
        }
    })?;
    validate(&scenario).map_err(|(path, message)| invalid(line_of(text, &path), format!("{}: {message}", path.join("."))))?;
    Ok(scenario)
}

/// Separates the key path from the message inside a tracked error.
const PATH_MARK: &str = "\u{1f}";

/// Deserializes a [`Scenario`] while recording the key path of any error.
struct Tracked(Scenario);

impl<'de> serde::Deserialize<'de> for Tracked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize(d).map(Tracked).map_err(|e| {
            let path = e.path().to_string();
            <D::Error as serde::de::Error>::custom(format!("{path}{PATH_MARK}{}", e.into_inner()))
        })
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde-saphyr appends " at line L, column C"; we print the line ourselves.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

type Violation = (Vec<&'static str>, String);

/// What is wrong with a scenario changed in code (e.g. a sweep point): the
/// key path and what is wrong, as for a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.join("."))]
pub struct InvalidScenario {
    pub path: Vec<&'static str>,
    pub message: String,
}

pub fn check_scenario(s: &Scenario) -> Result<(), InvalidScenario> {
    validate(s).map_err(|(path, message)| InvalidScenario { path, message })
}

fn check(ok: bool, path: &[&'static str], message: impl FnOnce() -> String) -> Result<(), Violation> {
    if ok { Ok(()) } else { Err((path.to_vec(), message())) }
}

fn validate(s: &Scenario) -> Result<(), Violation> {
    check(!s.name.trim().is_empty(), &["name"], || "must not be empty".into())?;
    let t = &s.topology;
    check(t.nodes >= 1, &["topology", "nodes"], || "need at least 1 node".into())?;
    check(t.nodes <= 64, &["topology", "nodes"], || format!("{} nodes is more than the 64 a run supports", t.nodes))?;
    check(matches!(t.mongo.members, 1 | 3), &["topology", "mongo", "members"], || {
        format!("{} members: a replica set here has 1 or 3 members", t.mongo.members)
    })?;
    check(t.provider != ProviderChoice::External || t.mongo.uri.is_some(), &["topology", "provider"], || {
        "provider external needs topology.mongo.uri".into()
    })?;
    check(
        t.provider != ProviderChoice::External || !s.modes.contains(&Mode::Kafka) || t.kafka.bootstrap.is_some(),
        &["topology", "provider"],
        || "provider external in kafka mode needs topology.kafka.bootstrap".into(),
    )?;
    check(t.kafka.partitions >= 1, &["topology", "kafka", "partitions"], || "need at least 1 partition".into())?;
    check(!s.modes.is_empty(), &["modes"], || "list at least one mode".into())?;
    for (i, m) in s.modes.iter().enumerate() {
        check(!s.modes[..i].contains(m), &["modes"], || format!("mode {} is listed twice", m.as_str()))?;
    }
    if let Some(command) = &s.system.command {
        check(!command.run.is_empty() && !command.run[0].trim().is_empty(), &["system", "command", "run"], || {
            "give the program and its arguments, e.g. [java, -jar, chat.jar, --server.port={port}]".into()
        })?;
        check(s.system.external.is_none(), &["system", "command"], || "give command or external, not both".into())?;
        check(command.ws_path.starts_with('/'), &["system", "command", "ws_path"], || format!("{:?} must start with /", command.ws_path))?;
    }
    if let Some(external) = &s.system.external {
        let path = &["system", "external", "urls"];
        check(!external.urls.is_empty(), path, || "list at least one node's WebSocket URL".into())?;
        for url in &external.urls {
            check(url.starts_with("ws://") || url.starts_with("wss://"), path, || format!("{url:?} is not a ws:// or wss:// URL"))?;
        }
        check(!s.system.guarantees.history.is_reference(), &["system", "guarantees", "history"], || {
            "an external system has no MongoDB the harness reads history from: declare history: none (or recovery)".into()
        })?;
        let client_side =
            |a: &FaultAction| matches!(a, FaultAction::DropClients { .. } | FaultAction::Network { link: LinkTarget::Clients, .. });
        let client_faults_only = s.faults.iter().all(|f| match &f.action {
            FaultAction::Random { choices } => choices.iter().all(client_side),
            other => client_side(other),
        });
        check(client_faults_only, &["faults"], || {
            "an external system's nodes and backends are not the harness's to kill, pause or restart: only drop_clients and network faults with link: clients apply".into()
        })?;
        check(s.topology.nodes as usize == external.urls.len(), &["topology", "nodes"], || {
            format!("{} nodes, but system.external lists {} URLs: one node per URL", s.topology.nodes, external.urls.len())
        })?;
    }
    let partitions = s.any_fault(|a| matches!(a, FaultAction::Partition { .. }));
    check(!partitions || t.nodes_in == NodesIn::Containers, &["faults"], || {
        "partition cuts a node container from the run's Docker network: it needs topology.nodes_in: containers \
         (for nodes in processes, a network fault with blackhole: true cuts the node's link through the harness's proxy)"
            .into()
    })?;
    if t.nodes_in == NodesIn::Containers {
        let path = &["topology", "nodes_in"];
        check(s.system.command.is_none() && s.system.external.is_none(), path, || {
            "containers runs the reference server's nodes; a command or external system runs its own".into()
        })?;
        check(matches!(t.provider, ProviderChoice::Auto | ProviderChoice::Docker), path, || {
            format!("nodes in containers need MongoDB in a container beside them: provider docker (or auto), not {:?}", t.provider)
        })?;
        check(s.modes.iter().all(|m| *m == Mode::Changestream), path, || {
            "nodes in containers run changestream mode only: the brokers of the other modes listen on host addresses the node containers cannot reach"
                .into()
        })?;
        let proxied =
            s.any_fault(|a| matches!(a, FaultAction::Network { link: LinkTarget::Mongo | LinkTarget::Kafka | LinkTarget::Broker, .. }));
        check(!proxied, &["faults"], || {
            "a network fault on a node's MongoDB or Kafka link goes through a proxy on this host, which node containers do not use: use partition".into()
        })?;
    }
    let w = &s.workload;
    check(w.rooms >= 1, &["workload", "rooms"], || "need at least 1 room".into())?;
    check(w.room_names.contains("{n}"), &["workload", "room_names"], || {
        format!("{:?} has no {{n}}: every room needs its own name", w.room_names)
    })?;
    check(!w.room_names.chars().any(|c| c.is_whitespace() || c.is_control()), &["workload", "room_names"], || {
        format!("{:?}: room names carry no spaces or control characters (they go into destinations and headers)", w.room_names)
    })?;
    check(w.senders_per_room + w.chatters_per_room >= 1, &["workload", "senders_per_room"], || {
        "need at least 1 sender or chatter per room".into()
    })?;
    check(w.subscribers_per_room + w.chatters_per_room >= 1, &["workload", "subscribers_per_room"], || {
        "need at least 1 subscriber or chatter per room (nothing to check otherwise)".into()
    })?;
    check(!w.connect_timeout.0.is_zero(), &["workload", "connect_timeout"], || "must be longer than 0s".into())?;
    if let Some(rate) = w.connect_rate {
        check(rate.is_finite() && rate > 0.0, &["workload", "connect_rate"], || {
            format!("must be a positive number of connections per second, not {rate} (leave it out for no pacing)")
        })?;
        // Late subscribers connect after the start: only the others must be up by then.
        let late = w.late_subscribers.as_ref().map_or(0, |l| u64::from(l.per_room) * u64::from(w.rooms));
        let on_time = w.connections() - late;
        let needs = on_time as f64 / rate;
        check(needs <= w.connect_timeout.0.as_secs_f64(), &["workload", "connect_timeout"], || {
            format!(
                "{on_time} connections at connect_rate {rate}/s take {needs:.0}s to open, longer than connect_timeout ({}s): \
                 raise connect_timeout to {}s or more, or connect_rate",
                w.connect_timeout.0.as_secs_f64(),
                needs.ceil() as u64 + 5
            )
        })?;
    }
    match &w.load {
        Load::Open { rate_per_s } => check(rate_per_s.is_finite() && *rate_per_s > 0.0, &["workload", "load", "open"], || {
            format!("rate_per_s must be a positive number, not {rate_per_s}")
        })?,
        Load::Closed { in_flight } => check(*in_flight >= 1, &["workload", "load", "closed"], || "in_flight must be at least 1".into())?,
    }
    if let Some(max) = w.max_pending {
        let path = &["workload", "max_pending"];
        check(max >= 1, path, || "must be at least 1 (leave it out for no bound)".into())?;
        check(matches!(w.load, Load::Open { .. }), path, || {
            "bounds an open loop's unacked sends; a closed loop's bound is its in_flight".into()
        })?;
        check(s.system.guarantees.ack != AckGuarantee::None, path, || {
            "counts sends waiting for their ack, and this system declares ack: none (nothing would ever be pending)".into()
        })?;
    }
    let (min, max) = match w.message_bytes {
        MessageBytes::Fixed(n) => (n, n),
        MessageBytes::Range { min, max } => (min, max),
    };
    check(min >= 1 && min <= max, &["workload", "message_bytes"], || format!("need 1 <= min <= max, got {min}..{max}"))?;
    check(max as usize <= MAX_BODY_BYTES, &["workload", "message_bytes"], || {
        format!("{max} bytes does not fit the protocol's 64 KiB frame limit (at most {MAX_BODY_BYTES})")
    })?;
    check(!w.duration.0.is_zero(), &["workload", "duration"], || "must be longer than 0s".into())?;
    check(w.warmup < w.duration, &["workload", "warmup"], || "must be shorter than the duration".into())?;
    if let Placement::Pinned { senders, subscribers } = &w.placement {
        for (list, name) in [(senders, "senders"), (subscribers, "subscribers")] {
            check(!list.is_empty(), &["workload", "placement"], || format!("pinned {name} list is empty"))?;
            if let Some(bad) = list.iter().find(|&&n| n >= t.nodes) {
                return Err((vec!["workload", "placement"], format!("pinned {name} names node {bad}, but nodes are 0..{}", t.nodes)));
            }
        }
    }
    check(w.rooms_per_client >= 1 && w.rooms_per_client <= w.rooms, &["workload", "rooms_per_client"], || {
        format!("{} rooms per client: need 1 to the {} rooms the workload has", w.rooms_per_client, w.rooms)
    })?;
    if let Some(churn) = &w.churn {
        check(!churn.every.0.is_zero(), &["workload", "churn", "every"], || "must be longer than 0s".into())?;
        check((0.0..=1.0).contains(&churn.share), &["workload", "churn", "share"], || {
            format!("{} is not a share from 0 to 1", churn.share)
        })?;
    }
    check(!s.checks.fresh_within.0.is_zero(), &["checks", "fresh_within"], || {
        "must be longer than 0s (to stop judging freshness, write freshness: {off: \"why\"})".into()
    })?;
    if let Some(late) = &w.late_subscribers {
        check(late.join_at < w.duration, &["workload", "late_subscribers", "join_at"], || {
            "late subscribers must join before the workload ends".into()
        })?;
    }
    for fault in &s.faults {
        check(fault.at < w.duration, &["faults", "at"], || {
            format!("fault {} at {:?} is after the workload ends", fault.action.name(), fault.at.0)
        })?;
        let actions: Vec<&FaultAction> = match &fault.action {
            FaultAction::Random { choices } => {
                check(!choices.is_empty(), &["faults", "action"], || "random needs at least one choice".into())?;
                choices.iter().collect()
            }
            other => vec![other],
        };
        for action in actions {
            if let Some(node) = action.node() {
                check(node < t.nodes, &["faults", "action"], || {
                    format!("{} names node {node}, but nodes are 0..{}", action.name(), t.nodes)
                })?;
            }
            if action.targets_kafka() {
                check(s.modes.contains(&Mode::Kafka), &["faults", "action"], || {
                    format!("{} acts on Kafka, but modes has no kafka (changestream mode has no Kafka to fault)", action.name())
                })?;
            }
            if action.targets_broker() {
                check(s.modes.iter().any(|m| *m != Mode::Changestream), &["faults", "action"], || {
                    format!("{} acts on the mode's broker, but modes has only changestream, which has none", action.name())
                })?;
            }
            match action {
                FaultAction::DropClients { share } => {
                    check(*share > 0.0 && *share <= 1.0, &["faults", "action"], || format!("drop_clients share {share} is not in (0, 1]"))?
                }
                FaultAction::Random { .. } if !std::ptr::eq(action, &fault.action) => {
                    return Err((vec!["faults", "action"], "random choices cannot be random themselves".into()));
                }
                _ => {}
            }
        }
    }
    validate_declarations(s)?;
    if let Some(auth) = &s.auth {
        validate_auth(s, auth)?;
    }
    check(!s.checks.recovery.within.0.is_zero(), &["checks", "recovery", "within"], || "must be longer than 0s".into())?;
    if let Some(why) = &s.checks.recovery.off {
        check(!why.trim().is_empty(), &["checks", "recovery", "off"], || "`off` needs a reason".into())?;
    }
    for (label, p) in [("ack", &s.checks.latency.ack), ("delivery", &s.checks.latency.delivery)] {
        let set = p.ceilings();
        for pair in set.windows(2) {
            check(pair[0].2 <= pair[1].2, &["checks", "latency"], || {
                format!("{label}: the {} ceiling is above the {} ceiling", pair[0].0, pair[1].0)
            })?;
        }
    }
    Ok(())
}

fn validate_auth(s: &Scenario, auth: &crate::scenario::Auth) -> Result<(), Violation> {
    check(!auth.answer_within.0.is_zero(), &["auth", "answer_within"], || "must be longer than 0s".into())?;
    check(!auth.attempts.is_empty(), &["auth", "attempts"], || "list at least one of send, subscribe, resubscribe, history".into())?;
    for (i, a) in auth.attempts.iter().enumerate() {
        check(!auth.attempts[..i].contains(a), &["auth", "attempts"], || format!("{} is listed twice", a.as_str()))?;
    }
    for group in &auth.intruders {
        check(group.count >= 1, &["auth", "intruders", "count"], || format!("{} intruders: need at least 1", group.count))?;
    }
    let reference = s.system.command.is_none() && s.system.external.is_none();
    // What can be tried here: resubscribe needs seq, history the reference server's API.
    let tried = auth.attempts.iter().any(|a| match a {
        Attempt::Send | Attempt::Subscribe => true,
        Attempt::Resubscribe => s.system.guarantees.seq(),
        Attempt::History => reference,
    });
    check(tried || auth.intruders.is_empty(), &["auth", "attempts"], || {
        "none of these can be tried on this system (resubscribe needs a seq, history the reference server's history API): \
         add send or subscribe"
            .into()
    })?;
    let needs_credentials = auth.intruders.iter().any(|g| g.credentials != Credential::None);
    check(reference || !needs_credentials || s.system.credentials.token_command.is_some(), &["auth", "intruders"], || {
        "the harness mints credentials for the reference server only: give system.credentials.token_command \
         (run with {client}, {room}, {rooms} and {credentials} = member, other_room, expired, forged, confusable, wildcard or spelling)"
            .into()
    })?;
    if auth.intruders.iter().any(|g| g.credentials == Credential::Expiring) {
        let path = &["auth", "intruders"];
        check(reference && s.system.credentials.token_command.is_none(), path, || {
            "expiring intruders need tokens the harness mints when sending starts (the reference server without a token_command)".into()
        })?;
        let after = auth.expire_after.0;
        check(after >= std::time::Duration::from_secs(1) && after < s.workload.duration.0, &["auth", "expire_after"], || {
            format!("{after:?}: the token must expire while sending runs (at least 1s, shorter than workload.duration)")
        })?;
    }
    Ok(())
}

/// What the system declares about its wire and its store must be able to
/// work: a pattern that compiles, an id the harness writes where the
/// declaration reads it, a store the harness can read.
fn validate_declarations(s: &Scenario) -> Result<(), Violation> {
    let sys = &s.system;
    let asked = Demands {
        rooms_per_client: s.workload.rooms_per_client,
        churn: s.workload.churn.is_some(),
        acks: sys.guarantees.ack != AckGuarantee::None,
        seq: sys.guarantees.seq(),
        reference_history: sys.guarantees.history.is_reference(),
        reference_server: sys.command.is_none() && sys.external.is_none(),
        pure_senders: s.workload.senders_per_room > 0,
    };
    sys.protocol.validate(&asked).map_err(|problem| {
        let path = ["system"].into_iter().chain(sys.protocol.section()).chain(problem.key).collect();
        (path, problem.why)
    })?;
    check(!s.checks.confirm_after.0.is_zero(), &["checks", "confirm_after"], || "must be longer than 0s".into())?;
    if let Some(store) = &sys.store {
        let path = &["system", "store"];
        check(sys.command.is_some(), path, || {
            "the store oracle reads the run's database ({db} on {mongo_uri}), which the harness provides only to a system.command".into()
        })?;
        check(!store.collection.trim().is_empty(), path, || "collection: name the collection the system writes messages to".into())?;
        check(!store.room.trim().is_empty() && !store.id.json.trim().is_empty(), path, || "room and id.json need a field path".into())?;
        if let Some(p) = &store.id.pattern {
            regex::Regex::new(p).map_err(|e| (path.to_vec(), format!("id.pattern does not compile: {e}")))?;
        }
        check(!sys.guarantees.seq(), &["system", "guarantees", "order"], || {
            "a store oracle numbers a room's documents itself; a system with a gap-free seq declares history: reference instead (or order: total / per_sender / none)".into()
        })?;
    }
    Ok(())
}

/// The 1-based line where a key path (e.g. `workload.rooms`) is written,
/// found by walking indentation; 0 when not found. Hand-written because the
/// parsed model carries no spans; it only has to find block-style keys.
pub(crate) fn line_of(text: &str, path: &[&str]) -> u64 {
    let mut min_indent = 0usize;
    let mut start = 0usize;
    let lines: Vec<&str> = text.lines().collect();
    let mut found = 0u64;
    for key in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if i > start && indent < min_indent && found > 0 {
                break;
            }
            let body = trimmed.trim_start_matches("- ");
            if body.starts_with(&format!("{key}:")) || body.contains(&format!("{{{key}:")) || body.contains(&format!(" {key}:")) {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = i as u64 + 1;
                start = i + 1;
                min_indent = indent + 1;
            }
            None => return found,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: t
topology:
  nodes: 2
workload:
  rooms: 2
  subscribers_per_room: 1
  senders_per_room: 1
  load: {open: {rate_per_s: 10}}
  duration: 2s
";

    fn err(text: &str) -> (u64, String) {
        match parse_str(text, "t.yaml").unwrap_err() {
            ScenarioError::Invalid { line, message, .. } => (line, message),
            other => panic!("unexpected {other}"),
        }
    }

    /// `protocol: mqtt` reads with its defaults and round-trips; a section
    /// of another protocol is refused at its line, not ignored.
    #[test]
    fn mqtt_declarations_are_read_and_sections_must_match_the_protocol() {
        let mqtt = format!(
            "{GOOD}system:\n  protocol: mqtt\n  mqtt:\n    qos: 2\n  command: {{run: [node, broker.js]}}\n  guarantees: {{ack: receipt, order: per_sender, history: none}}\n"
        );
        let s = parse_str(&mqtt, "t.yaml").unwrap();
        let crate::protocol::Declared::Mqtt(m) = &s.system.protocol else { panic!("mqtt: {:?}", s.system.protocol) };
        assert_eq!((m.qos, m.topic.as_str(), s.system.ws_path()), (2, "chat/{room}", "/mqtt"));
        let again = serde_saphyr::to_string(&s).unwrap();
        assert_eq!(parse_str(&again, "again.yaml").unwrap().system.protocol, s.system.protocol, "{again}");
        let (line, m) = err(&format!("{GOOD}system:\n  protocol: json\n  stomp:\n    host: /\n"));
        assert_eq!((line, m.as_str()), (12, "system.stomp: stomp is read only with protocol: stomp"));
        let (_, m) = err(&mqtt.replace("order: per_sender", "order: seq"));
        assert!(m.starts_with("system.mqtt: MQTT topics have no per-room seq"), "{m}");
    }

    /// A seed-shaped system: STOMP, no receipts, ids inside `content`.
    fn seed(extra_stomp: &str, extra_system: &str) -> String {
        format!(
            "{GOOD}system:\n  protocol: stomp\n  command: {{run: [node, s.js, '{{port}}']}}\n  guarantees: {{ack: none, order: per_sender, history: none}}\n  stomp:\n    body: '{{\"content\":\"{{text}} [{{id}}]\"}}'\n{extra_stomp}{extra_system}"
        )
    }

    #[test]
    fn nodes_in_containers_and_partitions_are_checked_before_the_run() {
        let containers = GOOD.replace("  nodes: 2\n", "  nodes: 2\n  nodes_in: containers\n");
        let partition = "faults:\n  - at: 1s\n    action: {partition: {node: 1, duration: 1s}}\n";
        let s = parse_str(&format!("{containers}{partition}"), "t.yaml").unwrap();
        assert_eq!(s.topology.nodes_in, NodesIn::Containers);
        let cases = [
            (format!("{GOOD}{partition}"), "faults: partition cuts a node container"),
            (containers.replace("  nodes_in:", "  provider: compat\n  nodes_in:"), "topology.nodes_in: nodes in containers need MongoDB"),
            (format!("{containers}modes: [changestream, kafka]\n"), "topology.nodes_in: nodes in containers run changestream mode only"),
            (
                format!("{containers}faults:\n  - at: 1s\n    action: {{network: {{node: 0, duration: 1s, blackhole: true}}}}\n"),
                "faults: a network fault on a node's MongoDB or Kafka link",
            ),
            (
                format!("{containers}system:\n  command: {{run: [x, '{{port}}']}}\n"),
                "topology.nodes_in: containers runs the reference server",
            ),
        ];
        for (text, expected) in cases {
            let (_, m) = err(&text);
            assert!(m.starts_with(expected), "{expected:?} in {m}");
        }
        // A network fault on the clients' link is the harness's own proxy: fine.
        let clients = format!(
            "{containers}faults:\n  - at: 1s\n    action: {{network: {{node: 0, link: clients, duration: 1s, blackhole: true}}}}\n"
        );
        parse_str(&clients, "t.yaml").unwrap();
    }

    #[test]
    fn auth_declarations_that_cannot_work_fail_early() {
        let auth = |body: &str| format!("{GOOD}auth:\n{body}");
        let s = parse_str(&auth("  intruders: [{credentials: forged}, {credentials: none, count: 2}]\n"), "t.yaml").unwrap();
        let a = s.auth.unwrap();
        assert_eq!(a.attempts, Attempt::ALL, "the default attempts");
        assert_eq!(a.answer_within.0, std::time::Duration::from_secs(10));
        let external = "system:\n  protocol: stomp\n  external: {urls: [ws://127.0.0.1:1/ws, ws://127.0.0.1:2/ws]}\n  guarantees: {order: per_sender, history: none}\n";
        let cases = [
            (auth("  intruders: [{credentials: forged, count: 0}]\n"), "auth.intruders.count: 0 intruders"),
            (auth("  attempts: []\n"), "auth.attempts: list at least one"),
            (auth("  attempts: [send, send]\n"), "auth.attempts: send is listed twice"),
            (auth("  answer_within: 0s\n"), "auth.answer_within: must be longer than 0s"),
            (auth("  intruders: [{credentials: stolen}]\n"), "auth.intruders[0].credentials: unknown variant"),
            (auth("  intruders: [{credentials: expiring}]\n  expire_after: 2s\n"), "auth.expire_after"),
            (
                format!("{}{external}", auth("  intruders: [{credentials: expiring}]\n")),
                "auth.intruders: the harness mints credentials for the reference server only",
            ),
            (
                format!("{}{external}", auth("  intruders: [{credentials: other_room}]\n")),
                "auth.intruders: the harness mints credentials for the reference server only",
            ),
            (
                format!("{}{external}", auth("  intruders: [{credentials: none}]\n  attempts: [resubscribe, history]\n")),
                "auth.attempts: none of these can be tried on this system",
            ),
        ];
        for (text, expected) in cases {
            let (_, m) = err(&text);
            assert!(m.starts_with(expected) || m.contains(expected), "{expected:?} in {m}");
        }
        // Without credentials to make, an external system needs no token_command.
        parse_str(&format!("{}{external}", auth("  intruders: [{credentials: none}]\n")), "t.yaml").unwrap();
    }

    #[test]
    fn a_seed_shaped_declaration_parses() {
        let text = seed(
            "    id: {json: content, pattern: '\\[(m\\d+)\\]$'}\n    text: {json: content}\n    subscribed: {after: 300ms}\n",
            "  store: {collection: chat_messages, room: groupId, id: {json: content, pattern: '\\[(m\\d+)\\]$'}}\n",
        );
        let s = parse_str(&text, "t.yaml").unwrap();
        assert_eq!(s.system.guarantees.ack, AckGuarantee::None);
        assert!(s.system.store.is_some());
    }

    /// Declarations that cannot work fail when the scenario is read,
    /// naming the key, never as a run full of phantoms.
    #[test]
    fn declarations_that_cannot_find_the_id_fail_early() {
        let bad_pattern = seed("    id: {json: content, pattern: '[(m'}\n", "");
        let (_, m) = err(&bad_pattern);
        assert!(m.starts_with("system.stomp.id: pattern does not compile"), "{m}");
        let never_matches = seed("    id: {json: content, pattern: '<(m\\d+)>'}\n", "");
        let (_, m) = err(&never_matches);
        assert!(m.starts_with("system.stomp.id: {json: \"content\", pattern: \"<(m\\\\d+)>\"} does not find the id"), "{m}");
        let whole_field = seed("    id: {json: content}\n", "");
        let (_, m) = err(&whole_field);
        assert!(m.contains("does not find the id"), "{m}");
        let no_id = format!("{GOOD}system:\n  protocol: stomp\n  stomp:\n    id: {{json: msgId}}\n    body: '{{\"c\":\"{{text}}\"}}'\n");
        let (_, m) = err(&no_id);
        assert!(m.contains("has no {id}"), "{m}");
        let not_json = format!("{GOOD}system:\n  protocol: stomp\n  stomp:\n    id: {{json: msgId}}\n    body: '{{id}} {{text}}'\n");
        let (_, m) = err(&not_json);
        assert!(m.contains("is not JSON"), "{m}");
    }

    const V1_FRAMES: &str = "  json_frames:\n    join: '{\"op\":\"subscribe\",\"room\":\"{room}\"}'\n    join_after: '{\"op\":\"subscribe\",\"room\":\"{room}\",\"after\":{after}}'\n    send: '{\"op\":\"send\",\"room\":\"{room}\",\"id\":\"{id}\",\"body\":\"{text}\"}'\n    frames:\n      - {match: {op: ack}, is: ack, id: {json: id}, seq: seq}\n      - {match: {op: msg}, is: delivery, id: {json: id}, room: room, seq: seq, text: body}\n      - {match: {op: subscribed}, is: joined, room: room, head: head}\n";

    fn frames(decl: &str) -> String {
        format!("{GOOD}system:\n  protocol: json_frames\n{decl}")
    }

    #[test]
    fn json_frames_declarations_are_checked_before_the_run() {
        parse_str(&frames(V1_FRAMES), "t.yaml").unwrap();
        // A seq read from deliveries needs no join_after (it cannot resume, and is judged so).
        let no_resume = V1_FRAMES.replace("    join_after: '{\"op\":\"subscribe\",\"room\":\"{room}\",\"after\":{after}}'\n", "");
        assert_ne!(no_resume, V1_FRAMES);
        parse_str(&frames(&no_resume), "t.yaml").unwrap();
        let cases = [
            (V1_FRAMES.replace("\"id\":\"{id}\",", ""), "has no {id}"),
            (V1_FRAMES.replace("is: delivery", "is: ignore"), "declare which frames are deliveries"),
            (V1_FRAMES.replace("is: delivery, id: {json: id},", "is: delivery,"), "the delivery matcher needs id"),
            (
                V1_FRAMES.replace("is: delivery, id: {json: id}", "is: delivery, id: {json: id, pattern: 'x(m[0-9]+)'}"),
                "the delivery matcher's id",
            ),
            (V1_FRAMES.replace("      - {match: {op: ack}, is: ack, id: {json: id}, seq: seq}\n", ""), "add a matcher with is: ack"),
            (
                V1_FRAMES.replace("      - {match: {op: subscribed}, is: joined, room: room, head: head}\n", ""),
                "needs a matcher with is: joined",
            ),
            (
                V1_FRAMES.replace("room: room, seq: seq, text: body", "room: room, text: body"),
                "order: seq needs the delivery matcher's seq",
            ),
            (format!("{V1_FRAMES}    leave_confirmed: {{after: 0s}}\n"), "leave_confirmed: after must be longer than 0s"),
            (format!("{V1_FRAMES}    leave_confirmed: frame\n"), "leave_confirmed: frame needs a matcher with is: left"),
            (format!("{V1_FRAMES}    subprotocols: [\"a b\"]\n"), "is not a WebSocket subprotocol token"),
            (format!("{V1_FRAMES}    separator: \"\"\n"), "separator must not be empty"),
            (V1_FRAMES.replace("\"room\":\"{room}\"}'", "\"room\":{room}}'"), "join is not JSON once filled"),
            (V1_FRAMES.replace(",\"after\":{after}}'", "}'"), "has no {after}"),
            (V1_FRAMES.replacen("  json_frames:\n", "  json_frames:\n    path: chat\n", 1), "path \"chat\" must start with /"),
            (
                V1_FRAMES.replacen("  json_frames:\n", "  json_frames:\n    confirmed: {after: 0s}\n", 1),
                "confirmed: after must be longer than 0s",
            ),
            (format!("{V1_FRAMES}      - {{match: {{op: hi}}, is: connected}}\n"), "answers the hello frame: declare hello"),
            (V1_FRAMES.replacen("  json_frames:\n", "  json_frames:\n    hello: '{\"t\":{token}}'\n", 1), "hello is not JSON once filled"),
        ];
        for (decl, want) in cases {
            let (_, m) = err(&frames(&decl));
            assert!(m.starts_with("system.json_frames: ") && m.contains(want), "{want}: {m}");
        }
        let (_, m) = err(&format!("{GOOD}system:\n  protocol: json_frames\n"));
        assert!(m.contains("needs a system.json_frames declaration"), "{m}");
        let (_, m) = err(&format!("{GOOD}system:\n  protocol: json\n{V1_FRAMES}"));
        assert!(m.starts_with("system.json_frames: json_frames is read only with protocol: json_frames"), "{m}");
        // Deliveries without a room label: fine for one room per client only.
        let roomless = frames(&V1_FRAMES.replace("is: delivery, id: {json: id}, room: room,", "is: delivery, id: {json: id},"));
        parse_str(&roomless, "t.yaml").unwrap();
        let (_, m) = err(&roomless.replace("  duration: 2s", "  duration: 2s\n  rooms_per_client: 2"));
        assert!(m.contains("need one room per client"), "{m}");
        let churn = frames(V1_FRAMES).replace("  duration: 2s", "  duration: 2s\n  churn: {every: 1s, share: 0.5, away: 100ms}");
        let (_, m) = err(&churn);
        assert!(m.contains("churn needs a leave template"), "{m}");
    }

    const SIO: &str = "  command: {run: [node, s.js]}\n  guarantees: {ack: receipt, order: per_sender, history: none}\n  socketio:\n    join: {event: join, args: ['\"{room}\"']}\n    send: {event: chat, args: ['{\"room\":\"{room}\",\"id\":\"{id}\",\"text\":\"{text}\"}']}\n    delivery: {event: chat, room: 0.room, id: {json: 0.id}, text: 0.text}\n";

    #[test]
    fn socketio_declarations_are_checked_before_the_run() {
        let sio = |decl: &str| format!("{GOOD}system:\n  protocol: socketio\n{decl}");
        parse_str(&sio(SIO), "t.yaml").unwrap();
        let cases = [
            (SIO.replace("\"id\":\"{id}\",", ""), "has no {id}"),
            (SIO.replace("id: {json: 0.id}", "id: {json: 0.id, pattern: 'x(m[0-9]+)'}"), "delivery.id"),
            (SIO.replace("ack: receipt", "ack: none"), "send.ack asks for acknowledgements"),
            (SIO.replace("order: per_sender, ", ""), "no resumable per-room seq"),
            (SIO.replace(", history: none", ""), "declare guarantees.history: none"),
            (SIO.replace("  command: {run: [node, s.js]}\n", ""), "does not speak Socket.IO"),
            (SIO.replace("args: ['\"{room}\"']", "args: ['{room}']"), "join.args[0] is not JSON once filled"),
            (SIO.replace("join: {event: join,", "join: {event: '',"), "join.event must name an event"),
            (format!("{SIO}    leave: {{event: leave, args: ['\"{{room}}\"'], ack: false}}\n"), "join.ack and leave.ack must agree"),
            (format!("{SIO}    settle: 0s\n"), "settle must be longer than 0s"),
            (format!("{SIO}    namespace: chat\n"), "namespace \"chat\" must start with /"),
            (format!("{SIO}    path: socket.io\n"), "path \"socket.io\" must start with /"),
            (format!("{SIO}    auth: '{{\"token\":{{token}}}}'\n"), "auth is not JSON once filled"),
        ];
        for (decl, want) in cases {
            let (_, m) = err(&sio(&decl));
            assert!(m.starts_with("system.socketio: ") && m.contains(want), "{want}: {m}");
        }
        let (_, m) = err(&format!("{GOOD}system:\n  protocol: socketio\n"));
        assert!(m.contains("needs a system.socketio declaration"), "{m}");
        let (_, m) = err(&format!("{GOOD}system:\n{SIO}"));
        assert!(m.starts_with("system.socketio: socketio is read only with protocol: socketio"), "{m}");
        // Deliveries without a room label: fine for one room per client only.
        let roomless = sio(&SIO.replace("delivery: {event: chat, room: 0.room,", "delivery: {event: chat,"));
        parse_str(&roomless, "t.yaml").unwrap();
        let (_, m) = err(&roomless.replace("  duration: 2s", "  duration: 2s\n  rooms_per_client: 2"));
        assert!(m.contains("need one room per client"), "{m}");
    }

    #[test]
    fn room_names_are_a_template_with_the_room_number() {
        let s = parse_str(&GOOD.replace("  rooms: 2\n", "  rooms: 2\n  room_names: \"g{n}-{run}\"\n"), "t.yaml").unwrap();
        assert_eq!(s.workload.room_name(7, "r1"), "g7-r1");
        assert_eq!(parse_str(GOOD, "t.yaml").unwrap().workload.room_name(3, "x"), "room-3");
        let (_, m) = err(&GOOD.replace("  rooms: 2\n", "  rooms: 2\n  room_names: lobby\n"));
        assert!(m.starts_with("workload.room_names: \"lobby\" has no {n}"), "{m}");
        let (_, m) = err(&GOOD.replace("  rooms: 2\n", "  rooms: 2\n  room_names: \"a {n}\"\n"));
        assert!(m.contains("no spaces"), "{m}");
    }

    #[test]
    fn a_store_needs_a_started_system_and_no_seq() {
        let on_external = format!(
            "{GOOD}system:\n  protocol: stomp\n  external: {{urls: [ws://a/ws, ws://b/ws]}}\n  guarantees: {{ack: none, order: per_sender, history: none}}\n  store: {{collection: c, room: r, id: {{json: i}}}}\n"
        );
        let (_, m) = err(&on_external);
        assert!(m.starts_with("system.store: the store oracle reads the run's database"), "{m}");
        let with_seq = seed("", "  store: {collection: c, room: r, id: {json: i}}\n").replace("order: per_sender, ", "");
        let (_, m) = err(&with_seq);
        assert!(m.starts_with("system.guarantees.order: a store oracle numbers"), "{m}");
        let bad = seed("", "  store: {collection: c, room: r, id: {json: i, pattern: '(('}}\n");
        let (_, m) = err(&bad);
        assert!(m.starts_with("system.store: id.pattern does not compile"), "{m}");
        let (_, m) = err(&seed("", "  store: {collection: ' ', room: r, id: {json: i}}\n"));
        assert!(m.starts_with("system.store: collection: name the collection"), "{m}");
        let (_, m) = err(&seed("", "  store: {collection: c, room: '', id: {json: i}}\n"));
        assert!(m.starts_with("system.store: room and id.json need a field path"), "{m}");
    }

    #[test]
    fn waits_that_cannot_end_are_refused() {
        let (_, m) = err(&seed("    subscribed: {after: 0s}\n", ""));
        assert!(m.starts_with("system.stomp.subscribed: after: must be longer than 0s"), "{m}");
        let (_, m) = err(&format!("{GOOD}checks: {{confirm_after: 0s}}\n"));
        assert!(m.starts_with("checks.confirm_after: must be longer than 0s"), "{m}");
    }

    #[test]
    fn parses_a_minimal_scenario_with_defaults() {
        let s = parse_str(GOOD, "t.yaml").unwrap();
        assert_eq!(s.topology.nodes, 2);
        assert_eq!(s.modes, vec![Mode::Changestream]);
        assert_eq!(s.workload.duration.0, std::time::Duration::from_secs(2));
        assert_eq!(s.workload.load, Load::Open { rate_per_s: 10.0 });
        assert!(s.checks.exactly_once.is_on());
        assert_eq!(s.checks.recovery.within.0, std::time::Duration::from_secs(10));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = GOOD.replace("  nodes: 2", "  nodez: 2");
        let (line, message) = err(&text);
        assert_eq!(line, 3, "{message}");
        assert!(message.contains("nodez"), "{message}");
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let (line, message) = err(&GOOD.replace("rooms: 2", "rooms: 0"));
        assert_eq!(line, 5);
        assert!(message.contains("workload.rooms"), "{message}");
        let (line, message) = err(&GOOD.replace("duration: 2s", "duration: soon"));
        assert_eq!(line, 9, "{message}");
        assert!(message.contains("soon"), "{message}");
    }

    #[test]
    fn client_shapes_and_the_freshness_window_are_checked() {
        for (text, needle) in [
            (GOOD.replace("duration: 2s", "duration: 2s\n  rooms_per_client: 3"), "workload.rooms_per_client"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  rooms_per_client: 0"), "workload.rooms_per_client"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  churn: {every: 0s, share: 0.5}"), "workload.churn.every"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  churn: {every: 1s, share: 1.5}"), "workload.churn.share"),
            (format!("{GOOD}checks: {{fresh_within: 0s}}\n"), "checks.fresh_within"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  max_pending: 0"), "workload.max_pending"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  connect_rate: 0"), "workload.connect_rate"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  connect_rate: -5"), "workload.connect_rate"),
            (GOOD.replace("duration: 2s", "duration: 2s\n  connect_rate: 0.01\n  connect_timeout: 5s"), "raise connect_timeout to"),
            (
                GOOD.replace("duration: 2s", "duration: 2s\n  max_pending: 4")
                    .replace("{open: {rate_per_s: 10}}", "{closed: {in_flight: 2}}"),
                "a closed loop's bound is its in_flight",
            ),
            (
                format!(
                    "{}system:\n  protocol: stomp\n  guarantees: {{ack: none, order: per_sender, history: none}}\n",
                    GOOD.replace("duration: 2s", "duration: 2s\n  max_pending: 4")
                ),
                "ack: none",
            ),
        ] {
            let (_, message) = err(&text);
            assert!(message.contains(needle), "{needle}: {message}");
        }
        let fine = GOOD.replace(
            "duration: 2s",
            "duration: 2s\n  rooms_per_client: 2\n  churn: {every: 1s, share: 0.3, rejoin: head}\n  max_pending: 8\n  connect_rate: 1",
        );
        assert!(parse_str(&format!("{fine}checks: {{fresh_within: 500ms}}\n"), "t.yaml").is_ok());
    }

    #[test]
    fn external_systems_are_refused_what_they_cannot_honour() {
        let ext = "system:\n  protocol: stomp\n  external: {urls: [ws://127.0.0.1:15674/ws, ws://127.0.0.1:15675/ws]}\n";
        let weak = "  guarantees: {order: per_sender, history: none}\n";
        let s = parse_str(&format!("{GOOD}{ext}{weak}"), "t.yaml").unwrap();
        assert!(!s.system.guarantees.seq());
        for (text, needle) in [
            (format!("{GOOD}{ext}"), "declare history: none"),
            (format!("{GOOD}{}{weak}", ext.replace("ws://", "http://")), "not a ws:// or wss:// URL"),
            (format!("{GOOD}{}{weak}", ext.replace("[ws://127.0.0.1:15674/ws, ws://127.0.0.1:15675/ws]", "[]")), "at least one"),
            (format!("{GOOD}{}{weak}", ext.replace(", ws://127.0.0.1:15675/ws", "")), "one node per URL"),
            (format!("{GOOD}{ext}{weak}faults:\n  - at: 1s\n    action: {{kill_node: {{node: 0}}}}\n"), "only drop_clients"),
        ] {
            let (_, message) = err(&text);
            assert!(message.contains(needle), "{needle}: {message}");
        }
        let client_link = "faults:\n  - at: 1s\n    action: {network: {node: 1, link: clients, duration: 1s, blackhole: true}}\n";
        assert!(parse_str(&format!("{GOOD}{ext}{weak}{client_link}"), "t.yaml").is_ok(), "the clients' link may be faulted");
    }

    #[test]
    fn unknown_fault_kinds_are_rejected_by_name() {
        let text = format!("{GOOD}faults:\n  - at: 1s\n    action: {{cut_cable: {{node: 1}}}}\n");
        let (line, message) = err(&text);
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("cut_cable") && message.contains("kill_node"), "{message}");
    }

    #[test]
    fn faults_expand_into_a_schedule_and_name_real_nodes() {
        let text = format!(
            "{GOOD}faults:\n  - at: 500ms\n    every: 500ms\n    times: 3\n    action: {{kill_node: {{node: 1, restart_after: 100ms}}}}\n  - at: 1s\n    action: {{drop_clients: {{share: 0.5}}}}\n"
        );
        let s = parse_str(&text, "t.yaml").unwrap();
        let schedule: Vec<(u128, &str)> = s.fault_schedule(1).iter().map(|(t, a)| (t.as_millis(), a.name())).collect();
        assert_eq!(schedule, vec![(500, "kill_node"), (1000, "kill_node"), (1000, "drop_clients"), (1500, "kill_node")]);
        let bad = format!("{GOOD}faults:\n  - at: 1s\n    action: {{pause_node: {{node: 5, duration: 1s}}}}\n");
        let (line, message) = err(&bad);
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("node 5"), "{message}");
    }

    #[test]
    fn kafka_faults_need_kafka_mode_and_are_left_out_of_changestream() {
        let faults = "faults:\n  - at: 1s\n    action: {restart_kafka: {down_for: 1s}}\n  - at: 1500ms\n    action: {network: {node: 1, link: kafka, duration: 1s}}\n";
        let (line, message) = err(&format!("{GOOD}{faults}"));
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("restart_kafka") && message.contains("no kafka"), "{message}");
        let both = format!("{}{faults}", GOOD.replace("workload:", "modes: [changestream, kafka]\nworkload:"));
        let s = parse_str(&both, "t.yaml").unwrap();
        assert!(s.may_restart_kafka() && !s.may_restart_mongo());
        assert!(s.needs_link_proxies(LinkTarget::Kafka) && !s.needs_link_proxies(LinkTarget::Mongo));
        let targets: Vec<bool> = s.fault_schedule(1).iter().map(|(_, a)| a.targets_kafka()).collect();
        assert_eq!(targets, [true, true]);
        let mongo_link = format!("{GOOD}faults:\n  - at: 1s\n    action: {{network: {{node: 0, duration: 1s}}}}\n");
        let s = parse_str(&mongo_link, "t.yaml").unwrap();
        assert!(s.needs_link_proxies(LinkTarget::Mongo) && !s.fault_schedule(1)[0].1.targets_kafka(), "the link defaults to MongoDB");
    }

    #[test]
    fn a_check_is_turned_off_only_with_a_reason() {
        let off = format!("{GOOD}checks:\n  liveness: {{progress: {{off: \"a room may stay silent here\"}}}}\n  exactly_once: true\n");
        let s = parse_str(&off, "t.yaml").unwrap();
        assert_eq!(s.checks.liveness.progress.off_reason(), Some("a room may stay silent here"));
        assert!(s.checks.liveness.ready.is_on() && s.checks.exactly_once.is_on());
        let (line, message) = err(&format!("{GOOD}checks:\n  exactly_once: false\n"));
        assert_eq!(line, 11, "{message}");
        assert!(message.contains("off") && message.contains("reason"), "{message}");
        let (_, message) = err(&format!("{GOOD}checks:\n  liveness: {{ready: {{off: \"\"}}}}\n"));
        assert!(message.contains("reason"), "{message}");
        let (_, message) = err(&format!("{GOOD}checks:\n  liveness: {{ready: {{of: x}}}}\n"));
        assert!(message.contains("of"), "{message}");
    }

    #[test]
    fn checks_survive_the_binary_trace_encoding() {
        let mut checks = Checks::default();
        checks.liveness.drained = Switch::Off("why".into());
        checks.recovery.within = HumanDuration(std::time::Duration::from_millis(1500));
        checks.latency.delivery.p99 = Some(HumanDuration(std::time::Duration::from_millis(20)));
        let bytes = postcard::to_stdvec(&checks).unwrap();
        assert_eq!(postcard::from_bytes::<Checks>(&bytes).unwrap(), checks);
        let json = serde_json::to_value(&checks).unwrap();
        assert_eq!(json["liveness"]["drained"]["off"], "why");
        assert_eq!(json["liveness"]["ready"], true);
    }

    #[test]
    fn line_of_walks_nested_keys() {
        let text = "a:\n  b: 1\nc:\n  b: 2\n  d:\n    b: 3\n";
        assert_eq!(line_of(text, &["c", "b"]), 4);
        assert_eq!(line_of(text, &["c", "d", "b"]), 6);
        assert_eq!(line_of(text, &["a", "b"]), 2);
    }
}

#[cfg(test)]
mod shipped {
    /// Every scenario in `scenarios/` parses and says what it proves.
    #[test]
    fn shipped_scenarios_parse_and_open_with_what_they_prove() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
        let mut seen = 0;
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    assert!(text.starts_with("# Proves:"), "{} must open with `# Proves:`", p.display());
                    super::load(&p).unwrap_or_else(|e| panic!("{e}"));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 6, "only {seen} scenarios found");
    }
}
