//! Running the `chatbench` binary on a scenario file and reading what it
//! wrote, for the end-to-end tests of systems the harness starts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

pub fn run(file: &Path, out: &Path) -> Output {
    run_with(file, out, &[])
}

/// [`run`] with more flags.
pub fn run_with(file: &Path, out: &Path, flags: &[&str]) -> Output {
    Command::new(BIN).args(["run", file.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()]).args(flags).output().unwrap()
}

pub fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json written")).unwrap()
}

/// Everything the run printed.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The kinds of finding the first mode reported.
pub fn kinds(r: &serde_json::Value) -> BTreeSet<String> {
    r["modes"][0]["findings_by_kind"].as_object().unwrap().keys().cloned().collect()
}
