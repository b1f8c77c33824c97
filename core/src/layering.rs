//! The layering check: reads every source file of the crate, collects the
//! `crate::<module>` paths each top-level module uses (sub-folders such as
//! `snapshot/` count as their top-level module), and asserts that every
//! edge goes down the table in the crate documentation, which makes the
//! module graph acyclic. Comments are ignored; paths through the crate
//! root's re-exports count as uses of the module they come from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table of `lib.rs`, lowest layer first.
const LAYERS: &[&[&str]] = &[
    &["error", "digest"],
    &["progress"],
    &["control", "home", "publish", "sparse", "tools"],
    &["config", "db", "network"],
    &["runtime"],
    &["image", "sandbox_store"],
    &["registry"],
    &["snapshot"],
    &["sandbox"],
    &["fuzzing"],
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The code of `text` without comments (line and block).
fn code_only(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if let Some(after) = rest.strip_prefix("r#\"") {
            // A raw string: ends at the first `"#`.
            out.push_str("\"\"");
            rest = after.find("\"#").map_or("", |i| &after[i + 2..]);
        } else if rest.starts_with("'\"'") {
            out.push_str("' '");
            rest = &rest[3..];
        } else if rest.starts_with('"') {
            // Skip string literals, which may hold `//` or `crate::`.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            rest = &rest[(i + 1).min(rest.len())..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Every identifier following `crate::` in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // Not `microsandbox_crate::`, `$crate::` or the like.
            code[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Names the crate root re-exports, mapped to the module they come from.
fn root_aliases(lib: &str) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt
            .strip_prefix("pub use ")
            .or_else(|| stmt.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                aliases.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    aliases
}

/// `module -> modules it uses`, over the whole crate.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let lib = code_only(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let aliases = root_aliases(&lib);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file).filter(|m| m != "layering") else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for name in crate_paths(&code) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(module) = aliases.get(&name) {
                module.clone()
            } else {
                panic!(
                    "{} uses crate::{name}, which is neither a module nor a root re-export",
                    file.display()
                );
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is missing from the layer table in lib.rs"))
}

/// A cycle through `start`, if any, as a path of modules.
fn cycle_from(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in edges.get(path.last().unwrap()).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(edges, start, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let edges = edges();
    for start in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, start, &mut vec![start.clone()]) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for module in files
        .iter()
        .filter_map(|f| module_of(&src, f))
        .filter(|m| m != "layering")
    {
        layer_of(&module);
    }
    let mut wrong = Vec::new();
    for (from, tos) in edges() {
        for to in tos {
            if layer_of(&to) >= layer_of(&from) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layering of lib.rs: {wrong:?}"
    );
}

#[test]
fn the_scanner_sees_uses_and_skips_comments() {
    let code = code_only(
        "use crate::a::b; // crate::c\n/* crate::d */ let s = \"crate::e\"; let r = r#\"\"crate::g\"#; let q = '\"'; crate::f()",
    );
    assert_eq!(
        crate_paths(&code),
        BTreeSet::from(["a".to_string(), "f".to_string()])
    );
    let aliases = root_aliases("pub use x::{A, B};\npub(crate) use y::f;");
    assert_eq!(aliases["A"], "x");
    assert_eq!(aliases["f"], "y");
}
