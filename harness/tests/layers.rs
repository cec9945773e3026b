//! The harness's data flows one way (`lib.rs`'s `# Layout`), and this test
//! holds the code to it: no import loop between the crate's top-level
//! modules, nor between sibling files of one folder (a folder's `mod.rs`
//! is its hub, so its children may use it and it them). `cargo test
//! --test layers -- --nocapture` prints the module order it found.
//!
//! Imports are read from the source text (`crate::a`, `crate::{a, b::c}`,
//! `super::x`), outside comments and `#[cfg(test)]` modules: tests may
//! reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as a path relative to it.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("harness/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(dir).expect("under src").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without line comments and without the `#[cfg(test)]`
/// module at its end.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The names right after `prefix` (`crate::`, `super::`), also inside a
/// brace group: `crate::{a, b::c}` names `a` and `b`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = regex::Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*").expect("a valid pattern");
    let group_item = regex::Regex::new(r"(?:^|[{,])\s*([A-Za-z_][A-Za-z0-9_]*)").expect("a valid pattern");
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let preceded_by_ident = rest[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[i + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Nested groups are rare here; the first level names the modules.
            for c in group_item.captures_iter(&group[..end]) {
                names.insert(c[1].to_owned());
            }
        } else if let Some(m) = ident.find(rest) {
            names.insert(m.as_str().to_owned());
        }
    }
    names.retain(|n| n != "self" && n != "super");
    names
}

/// Module name of a file: its first path component (`client/mod.rs` → `client`).
fn top(file: &Path) -> String {
    let first = file.components().next().expect("a relative path").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_owned()
}

/// A cycle in a graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = path.iter().position(|p| p == n).expect("on the path");
                let mut c = path[from..].to_vec();
                c.push(n.to_owned());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

/// Modules in an order where each uses only those before it.
fn order(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    while done.len() < graph.len() {
        let next = graph
            .iter()
            .find(|(n, deps)| !done.contains(n) && deps.iter().all(|d| done.contains(d) || !graph.contains_key(d)))
            .map(|(n, _)| n.clone())
            .expect("an acyclic graph has a next module");
        done.push(next);
    }
    done
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&dir) {
        let module = top(&file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&file)).expect("a source file");
        let uses = names_after(&code(&text), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses.into_iter().filter(|u| *u != module));
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    graph
}

#[test]
fn the_crate_s_modules_import_each_other_in_one_direction() {
    let graph = module_graph();
    assert!(graph.contains_key("protocol") && graph.contains_key("scenario"), "the reader finds the modules: {graph:?}");
    if let Some(c) = cycle(&graph) {
        panic!("an import loop between modules: {}", c.join(" -> "));
    }
    println!("modules, each using only those before it: {}", order(&graph).join(" < "));
}

/// The protocols sit below everything that drives or declares a run:
/// they may use only the leaves below them.
#[test]
fn protocols_depend_only_on_the_leaves_below_them() {
    let graph = module_graph();
    let allowed: BTreeSet<String> = ["message", "duration"].map(String::from).into();
    let uses = &graph["protocol"];
    assert!(uses.is_subset(&allowed), "protocol/ uses {uses:?}; only {allowed:?} are below it");
    for leaf in &allowed {
        assert!(graph[leaf].is_empty(), "{leaf} is a leaf, yet uses {:?}", graph[leaf]);
    }
}

#[test]
fn no_folder_s_files_import_each_other_in_a_circle() {
    let dir = src();
    // folder -> file stem -> sibling stems it uses (mod.rs is the hub, left out).
    let mut folders: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in sources(&dir) {
        let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) else { continue };
        let stem = file.file_stem().expect("a file name").to_string_lossy().to_string();
        if stem == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&file)).expect("a source file");
        let code = code(&text);
        let folder_path = parent.to_string_lossy().replace('/', "::");
        let mut uses = names_after(&code, "super::");
        uses.extend(names_after(&code, &format!("crate::{folder_path}::")));
        folders.entry(parent.to_path_buf()).or_default().insert(stem, uses);
    }
    let mut checked = 0;
    for (folder, files) in &folders {
        let stems: BTreeSet<String> = files.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> =
            files.iter().map(|(f, uses)| (f.clone(), uses.iter().filter(|u| stems.contains(*u) && *u != f).cloned().collect())).collect();
        if let Some(c) = cycle(&graph) {
            panic!("files of {} import each other in a circle: {}", folder.display(), c.join(" -> "));
        }
        checked += 1;
    }
    assert!(checked >= 4, "the reader finds the folders (client, protocol, check, report, ...): {checked}");
}

/// The reader itself: a loop it is shown is a loop it finds.
#[test]
fn the_reader_finds_imports_and_loops() {
    let code = code(
        "use crate::{scenario::X, trace};\nfn f() { crate::client::go(); } // crate::nothing\n#[cfg(test)]\nmod t { use crate::run; }",
    );
    assert_eq!(names_after(&code, "crate::"), ["client", "scenario", "trace"].map(String::from).into());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
    assert_eq!(order(&g), ["c", "b", "a"]);
    g.get_mut("c").expect("c").insert("a".into());
    assert_eq!(cycle(&g), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
}
