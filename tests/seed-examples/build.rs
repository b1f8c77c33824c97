//! Turns `snapshots-rust.mdx` into Rust that must compile against
//! `microsandbox` (written to `$OUT_DIR/reference.rs`, never into the source
//! tree; `tests/reference.rs` includes it):
//!
//! - every ```rust block that is a bare signature (`[async] fn name(..) -> T`)
//!   becomes `sig_<receiver>_<name>`, a free function with the same
//!   parameters and return type that calls the real API;
//! - every other ```rust block is an example and becomes
//!   `example_<NN>_<heading>`, an `async fn() -> MicrosandboxResult<()>`;
//!   the ones that need no VM are also called, in page order, by `run_all`;
//! - the type tables become struct-literal, variant and accessor checks
//!   (`fields_*`, `variant_*`, `variants_*`, `table_*`), plus the aliases and
//!   re-exports the prose names (`alias_*`, `reexport_*`).
//!
//! Each generated item carries a doc comment naming the heading and the
//! `.mdx` line it came from, so a compile error says which part of the
//! reference the API disagrees with.
//!
//! `SEED_EXAMPLES_SKIP=name,name,..` emits the named generated items behind
//! `#[cfg(any())]` and leaves them out of `run_all`: for checking the rest of
//! the harness while core still differs from the page.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

const REFERENCE: &str = "snapshots-rust.mdx";

/// The receiver of each method heading, by (heading receiver, section),
/// with the short name used in generated item names. Explicit because the
/// page reuses `h.` for two types and `.` for two builders: `h.snapshot()` /
/// `h.snapshot_to()` say "`SandboxHandle` method", `.from_snapshot()` says
/// "`SandboxBuilder` setter".
#[rustfmt::skip]
const RECEIVERS: &[(&str, &str, Receiver, &str)] = &[
    ("Snapshot::", "Static methods", Receiver::Static("Snapshot"), "snapshot"),
    ("snap.", "Instance methods", Receiver::Ref("snap", "Snapshot"), "snap"),
    ("h.", "SnapshotHandle methods", Receiver::Ref("h", "SnapshotHandle"), "handle"),
    ("h.", "Sandbox entry points", Receiver::Ref("h", "SandboxHandle"), "sandbox_handle"),
    (".", "Sandbox entry points", Receiver::Value("b", "SandboxBuilder"), "sandbox_builder"),
    (".", "SnapshotBuilder", Receiver::Value("b", "SnapshotBuilder"), "builder"),
];

/// An example needs a VM (a sandbox to get, stop, create or capture) if it
/// mentions any of these; such examples are compiled but never run.
const NEEDS_VM: &[&str] = &[
    "Sandbox::",
    "Snapshot::builder(",
    "Snapshot::create(",
    ".snapshot(",
    ".snapshot_to(",
    ".from_snapshot(",
];

/// Imports of the generated checks: where the page says each type lives.
/// `Snapshot`/`Sandbox` come from the crate root (the page's first example);
/// the page imports `ExportOpts` and `UpperVerifyStatus` from
/// `microsandbox::snapshot` and says `Manifest`, `ImageRef`, `UpperLayer` are
/// re-exported there, so the other snapshot types are taken from there too.
/// `SandboxHandle`/`SandboxBuilder` are not on this page: crate root.
const CHECK_PRELUDE: &str = "\
use microsandbox::snapshot::{
    ExportOpts, ImageRef, Manifest, SnapshotBuilder, SnapshotConfig, SnapshotDestination,
    SnapshotFormat, SnapshotHandle, SnapshotSpec, SnapshotVerifyReport, UpperIntegrity,
    UpperLayer, UpperVerifyStatus,
};
use microsandbox::{MicrosandboxResult, SandboxBuilder, SandboxHandle, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
";

/// The imports the page's first example states; every example sees them.
const EXAMPLE_PRELUDE: &str = "use microsandbox::{Sandbox, Snapshot};\n";

#[derive(Clone, Copy)]
enum Receiver {
    Static(&'static str),
    Ref(&'static str, &'static str),
    Value(&'static str, &'static str),
}

impl Receiver {
    fn ty(self) -> &'static str {
        match self {
            Receiver::Static(t) | Receiver::Ref(_, t) | Receiver::Value(_, t) => t,
        }
    }
}

/// Where a block or table sits on the page.
#[derive(Clone, Default)]
struct Place {
    section: String,
    type_heading: Option<String>,
    method: Option<(String, String)>,
}

impl Place {
    fn describe(&self) -> String {
        match (&self.method, &self.type_heading) {
            (Some((recv, name)), _) => format!("{recv}{name}() [{}]", self.section),
            (None, Some(t)) => format!("{t} [Types]"),
            (None, None) if self.section.is_empty() => "Typical flow".to_string(),
            (None, None) => self.section.clone(),
        }
    }
    /// The receiver of the method heading above, and its short name.
    fn receiver(&self) -> Option<(Receiver, &'static str)> {
        let (recv, _) = self.method.as_ref()?;
        Some(
            RECEIVERS
                .iter()
                .find(|(r, s, _, _)| r == recv && *s == self.section)
                .map(|(_, _, rc, slug)| (*rc, *slug))
                .unwrap_or_else(|| {
                    panic!(
                        "{REFERENCE}: no receiver for `{recv}` in section {:?}: add it to RECEIVERS in build.rs",
                        self.section
                    )
                }),
        )
    }
}

struct Block {
    place: Place,
    line: usize,
    code: String,
}

struct Table {
    place: Place,
    line: usize,
    header: Vec<String>,
    /// (line in the page, cells)
    rows: Vec<(usize, Vec<String>)>,
}

struct Prose {
    place: Place,
    line: usize,
    text: String,
}

struct Page {
    blocks: Vec<Block>,
    tables: Vec<Table>,
    prose: Vec<Prose>,
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn parse(text: &str) -> Page {
    let mut page = Page {
        blocks: Vec::new(),
        tables: Vec::new(),
        prose: Vec::new(),
    };
    let mut place = Place::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(h) = line.strip_prefix("#### ") {
            let recv = between(h, "msb-recv\">", "</span>");
            let name = between(h, "msb-hn\">", "</span>");
            match (recv, name) {
                (Some(r), Some(n)) => {
                    let n = n.trim_end_matches("()");
                    place.method = Some((r.to_string(), n.to_string()));
                }
                _ => panic!("{REFERENCE}:{}: unrecognised method heading", i + 1),
            }
        } else if let Some(h) = line.strip_prefix("### ") {
            place.type_heading = Some(h.trim().to_string());
            place.method = None;
        } else if let Some(h) = line.strip_prefix("## ") {
            place.section = h.trim().to_string();
            place.type_heading = None;
            place.method = None;
        } else if line.trim_start().starts_with("```rust") {
            let start = i + 1;
            let mut code = String::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                code.push_str(lines[i]);
                code.push('\n');
                i += 1;
            }
            assert!(i < lines.len(), "{REFERENCE}:{start}: unclosed code block");
            page.blocks.push(Block {
                place: place.clone(),
                line: start + 1,
                code,
            });
        } else if line.starts_with('|') && place.type_heading.is_some() {
            let start = i + 1;
            let mut rows = Vec::new();
            while i < lines.len() && lines[i].starts_with('|') {
                rows.push((i + 1, split_row(lines[i])));
                i += 1;
            }
            let header = rows.remove(0).1;
            rows.retain(|(_, r)| !r.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')));
            page.tables.push(Table {
                place: place.clone(),
                line: start,
                header,
                rows,
            });
            continue;
        } else if !line.trim().is_empty() && place.type_heading.is_some() {
            page.prose.push(Prose {
                place: place.clone(),
                line: i + 1,
                text: line.to_string(),
            });
        }
        i += 1;
    }
    page
}

fn split_row(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// A table cell's type: markdown links and backticks removed.
fn cell_type(cell: &str) -> String {
    let mut out = String::new();
    let mut rest = cell;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find("](").map(|c| c + open);
        let end = close.and_then(|c| rest[c..].find(')').map(|e| e + c));
        match (close, end) {
            (Some(c), Some(e)) => {
                out.push_str(&rest[open + 1..c]);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace('`', "").trim().to_string()
}

/// `SnapshotVerifyReport` -> `snapshot_verify_report`.
fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Split at top-level commas (outside `<>`, `()`, `[]`).
fn split_top(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0i32, String::new(), Vec::new());
    for ch in s.chars() {
        match ch {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Replace whole-word `Self` with `ty`.
fn replace_self(s: &str, ty: &str) -> String {
    let mut out = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let word = s[i..].starts_with("Self")
            && (i == 0 || !(bytes[i - 1] as char).is_alphanumeric())
            && !s[i + 4..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if word {
            out.push_str(ty);
            i += 4;
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

struct Signature {
    is_async: bool,
    name: String,
    self_param: Option<String>,
    params: Vec<(String, String)>,
    ret: String,
}

impl Signature {
    /// The parameter names, comma separated: the arguments of a pass-through call.
    fn args(&self) -> String {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        names.join(", ")
    }

    /// (`async ` or ``, `.await` or ``) for a pass-through function.
    fn asyncness(&self) -> (&'static str, &'static str) {
        if self.is_async {
            ("async ", ".await")
        } else {
            ("", "")
        }
    }
}

/// `[async] fn name(params) [-> ret]` with no body, or `None`.
fn parse_signature(code: &str) -> Option<Signature> {
    let flat = code.split_whitespace().collect::<Vec<_>>().join(" ");
    let (is_async, rest) = match flat.strip_prefix("async ") {
        Some(r) => (true, r),
        None => (false, flat.as_str()),
    };
    let rest = rest.strip_prefix("fn ")?;
    if rest.contains('{') || rest.contains(';') {
        return None;
    }
    let open = rest.find('(')?;
    let name = rest[..open].trim().to_string();
    let mut depth = 0;
    let mut close = None;
    for (i, ch) in rest[open..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    let mut params = split_top(&rest[open + 1..close]);
    let after = rest[close + 1..].trim();
    let ret = match after.strip_prefix("->") {
        Some(r) => r.trim().to_string(),
        None if after.is_empty() => "()".to_string(),
        None => return None,
    };
    let self_param = match params.first().map(String::as_str) {
        Some("self" | "&self" | "&mut self" | "mut self") => Some(params.remove(0)),
        _ => None,
    };
    let params = params
        .iter()
        .map(|p| {
            let (n, t) = p.split_once(':').expect("parameter without a type");
            (n.trim().to_string(), t.trim().to_string())
        })
        .collect();
    Some(Signature {
        is_async,
        name,
        self_param,
        params,
        ret,
    })
}

struct Out {
    code: String,
    skip: BTreeSet<String>,
    emitted: BTreeSet<String>,
}

impl Out {
    /// Emit one item named `name` with its provenance doc comment.
    fn item(&mut self, name: &str, doc: &[String], body: &str) {
        assert!(
            self.emitted.insert(name.to_string()),
            "generated name {name} used twice"
        );
        for d in doc {
            writeln!(self.code, "/// {d}").unwrap();
        }
        if self.skip.contains(name) {
            writeln!(self.code, "/// Skipped: listed in SEED_EXAMPLES_SKIP.").unwrap();
            writeln!(self.code, "#[cfg(any())]").unwrap();
        }
        self.code.push_str(body);
        self.code.push_str("\n\n");
    }
}

/// Trailing comment on generated lines, so that the line rustc quotes in an
/// error names the generated item and the page line it stands for.
fn tag(item: &str, line: usize) -> String {
    format!("// {item} <- {REFERENCE}:{line}")
}

fn quote_doc(code: &str) -> Vec<String> {
    code.lines().map(|l| format!("    {l}")).collect()
}

fn gen_signature(out: &mut Out, block: &Block, sig: &Signature) -> String {
    let place = &block.place;
    let (recv, slug) = place.receiver().unwrap_or_else(|| {
        panic!(
            "{REFERENCE}:{}: a signature outside a method heading",
            block.line
        )
    });
    let name = format!("sig_{slug}_{}", sig.name);
    let args = sig.args();
    let mut params = Vec::new();
    let call = match (recv, sig.self_param.as_deref()) {
        (Receiver::Static(t), None) => format!("{t}::{}({args})", sig.name),
        (Receiver::Ref(v, t), Some("&self")) => {
            params.push(format!("{v}: &{t}"));
            format!("{v}.{}({args})", sig.name)
        }
        (Receiver::Value(v, t), Some("self")) => {
            params.push(format!("{v}: {t}"));
            format!("{v}.{}({args})", sig.name)
        }
        (_, s) => panic!(
            "{REFERENCE}:{}: receiver {s:?} does not fit the heading receiver of {}",
            block.line,
            place.describe()
        ),
    };
    params.extend(sig.params.iter().map(|(n, t)| format!("{n}: {t}")));
    let ret = replace_self(&sig.ret, recv.ty());
    let (asyncness, awaited) = sig.asyncness();
    let mut doc = vec![
        format!(
            "Signature of `{}` — {REFERENCE}:{} ({}):",
            place.describe(),
            block.line,
            recv.ty()
        ),
        String::new(),
    ];
    doc.extend(quote_doc(block.code.trim_end()));
    let body = format!(
        "pub {asyncness}fn {name}({}) -> {ret} {{\n    {call}{awaited} {}\n}}",
        params.join(", "),
        tag(&name, block.line)
    );
    out.item(&name, &doc, &body);
    name
}

struct Example {
    name: String,
    what: String,
    runs: bool,
}

/// Absolute paths in runnable examples are rewritten to the same path under
/// the test's temporary root (`crate::seed_path("/data/snapshots")`, still a
/// `&'static str`), so running them touches neither `/data` nor the shared
/// `/tmp`. Examples that are only compiled keep the page's text exactly.
fn rewrite_paths(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("\"/") {
        let end = rest[i + 1..]
            .find('"')
            .map(|e| e + i + 1)
            .expect("open string");
        out.push_str(&rest[..i]);
        write!(out, "crate::seed_path({})", &rest[i..=end]).unwrap();
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn gen_example(out: &mut Out, block: &Block, n: usize) -> Example {
    let place = &block.place;
    let slug = match (&place.method, &place.type_heading) {
        (Some((recv, name)), _) => match place.receiver() {
            Some((_, slug)) => format!("{slug}_{name}"),
            None => snake(&format!("{recv}_{name}")),
        },
        (None, Some(t)) => snake(t),
        (None, None) if place.section.is_empty() => "typical_flow".to_string(),
        (None, None) => snake(&place.section),
    };
    let name = format!("example_{n:02}_{slug}");
    let runs = !NEEDS_VM.iter().any(|t| block.code.contains(t));
    let code = if runs {
        rewrite_paths(&block.code)
    } else {
        block.code.clone()
    };
    // `use` lines go first (hoisted), then the statements, each tagged
    // with its own page line.
    let numbered: Vec<(usize, &str)> = code
        .lines()
        .enumerate()
        .map(|(i, l)| (block.line + i, l))
        .collect();
    let (uses, stmts): (Vec<_>, Vec<_>) = numbered
        .iter()
        .partition(|(_, l)| l.trim_start().starts_with("use "));
    let mut body = String::new();
    for (line, u) in &uses {
        writeln!(body, "    {} {}", u.trim(), tag(&name, *line)).unwrap();
    }
    for (line, s) in stmts.iter().skip_while(|(_, s)| s.trim().is_empty()) {
        if s.trim().is_empty() {
            body.push('\n');
        } else {
            writeln!(body, "    {s} {}", tag(&name, *line)).unwrap();
        }
    }
    let what = format!("{} example, {REFERENCE}:{}", place.describe(), block.line);
    let mut doc = vec![
        format!(
            "Example of `{}` — {REFERENCE}:{}",
            place.describe(),
            block.line
        ),
        if runs {
            "Runs in `run_all` (needs no VM).".to_string()
        } else {
            "Compiled only: needs a VM.".to_string()
        },
    ];
    if code != block.code {
        doc.push("Absolute paths rewritten under the test root with `crate::seed_path`.".into());
    }
    let item = format!(
        "pub async fn {name}() -> microsandbox::MicrosandboxResult<()> {{\n{body}    Ok(())\n}}"
    );
    out.item(&name, &doc, &item);
    Example { name, what, runs }
}

fn gen_tables(out: &mut Out, page: &Page) {
    for table in &page.tables {
        let ty = table.place.type_heading.clone().unwrap();
        let where_ = format!("{REFERENCE}:{} (table of `{ty}`)", table.line);
        let first = table.header[0].as_str();
        match first {
            "Field" => {
                let fields: Vec<(usize, String, String)> = table
                    .rows
                    .iter()
                    .map(|(l, r)| (*l, r[0].clone(), cell_type(&r[1])))
                    .collect();
                let name = format!("fields_{}", snake(&ty));
                let params = fields
                    .iter()
                    .map(|(l, f, t)| format!("\n    {f}: {t}, {}", tag(&name, *l)))
                    .collect::<String>();
                let names = fields
                    .iter()
                    .map(|(l, f, _)| format!("        {f}, {}\n", tag(&name, *l)))
                    .collect::<String>();
                let doc = vec![format!(
                    "`{ty}` has exactly these public fields, of these types — {where_}"
                )];
                let body = format!(
                    "pub fn {name}({params}\n) -> {ty} {{\n    {ty} {{ {}\n{names}    }}\n}}",
                    tag(&name, table.line)
                );
                out.item(&name, &doc, &body);
            }
            "Variant" | "Value" => gen_enum(out, table, &ty, &where_),
            "Method" => gen_method_table(out, page, table, &ty, &where_),
            other => panic!("{where_}: unknown table kind {other:?}"),
        }
    }
}

fn gen_enum(out: &mut Out, table: &Table, ty: &str, where_: &str) {
    let mut arms = Vec::new();
    let name = format!("variants_{}", snake(ty));
    for (line, row) in &table.rows {
        let line = *line;
        let variant = row[0].replace('`', "");
        let fields = if table.header[0] == "Value" {
            "-".to_string()
        } else {
            row[1].clone()
        };
        let ctor = format!("variant_{}_{}", snake(ty), snake(&variant));
        let doc = vec![format!("`{ty}::{variant}` ({fields}) — {where_}")];
        let (arm_tag, ctor_tag) = (tag(&name, line), tag(&ctor, line));
        if fields.trim() == "-" {
            arms.push(format!("{ty}::{variant} => \"{variant}\", {arm_tag}"));
            let body = format!("pub fn {ctor}() -> {ty} {{\n    {ty}::{variant} {ctor_tag}\n}}");
            out.item(&ctor, &doc, &body);
        } else if fields.contains(':') {
            // Named fields: "- `algorithm: String` <br/> - `digest: String`".
            let named: Vec<(String, String)> = fields
                .split("<br/>")
                .map(|f| {
                    let f = f.trim().trim_start_matches('-').trim().replace('`', "");
                    let (n, t) = f.split_once(':').expect("field without a type");
                    (n.trim().to_string(), t.trim().to_string())
                })
                .collect();
            let pat = named
                .iter()
                .map(|(n, _)| format!("{n}: _"))
                .collect::<Vec<_>>()
                .join(", ");
            arms.push(format!(
                "{ty}::{variant} {{ {pat} }} => \"{variant}\", {arm_tag}"
            ));
            let params = named
                .iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect::<Vec<_>>()
                .join(", ");
            let names = named
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let body = format!(
                "pub fn {ctor}({params}) -> {ty} {{\n    {ty}::{variant} {{ {names} }} {ctor_tag}\n}}"
            );
            out.item(&ctor, &doc, &body);
        } else {
            let types: Vec<String> = split_top(&cell_type(&fields));
            let params = types
                .iter()
                .enumerate()
                .map(|(i, t)| format!("f{i}: {t}"))
                .collect::<Vec<_>>()
                .join(", ");
            let args = (0..types.len())
                .map(|i| format!("f{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let pat = vec!["_"; types.len()].join(", ");
            arms.push(format!(
                "{ty}::{variant}({pat}) => \"{variant}\", {arm_tag}"
            ));
            let body = format!(
                "pub fn {ctor}({params}) -> {ty} {{\n    {ty}::{variant}({args}) {ctor_tag}\n}}"
            );
            out.item(&ctor, &doc, &body);
        }
    }
    let doc = vec![format!(
        "`{ty}` has exactly these variants (an exhaustive match, no wildcard) — {where_}"
    )];
    let body = format!(
        "pub fn {name}(v: &{ty}) -> &'static str {{\n    match v {{ {}\n        {}\n    }}\n}}",
        tag(&name, table.line),
        arms.join("\n        ")
    );
    out.item(&name, &doc, &body);
}

/// Accessor tables ("Method | Type"): each row must match the method's
/// block elsewhere on the page (same name, same receiver type); the check
/// uses the block's parameters and asyncness and the table's return type
/// (`Result<T>` read as `MicrosandboxResult<T>`).
fn gen_method_table(out: &mut Out, page: &Page, table: &Table, ty: &str, where_: &str) {
    for (line, row) in &table.rows {
        let method = row[0].split('(').next().unwrap().trim().to_string();
        let mut ret = cell_type(&row[1]);
        if ret.starts_with("Result<") {
            ret = format!("Microsandbox{ret}");
        }
        let block = page.blocks.iter().find_map(|b| {
            let (rc, _) = b.place.method.as_ref().and(b.place.receiver())?;
            let sig = parse_signature(&b.code)?;
            (rc.ty() == ty && sig.name == method).then_some(sig)
        });
        let Some(sig) = block else {
            panic!("{where_}: `{ty}::{method}` has no signature block on the page");
        };
        assert_eq!(
            ret,
            replace_self(&sig.ret, ty),
            "{where_}: the table and the signature block of `{method}` disagree"
        );
        let name = format!("table_{}_{method}", snake(ty));
        let mut params = vec![format!("x: &{ty}")];
        params.extend(sig.params.iter().map(|(n, t)| format!("{n}: {t}")));
        let args = sig.args();
        let (asyncness, awaited) = sig.asyncness();
        let doc = vec![format!("`{ty}::{}` returns `{ret}` — {where_}", row[0])];
        let body = format!(
            "pub {asyncness}fn {name}({}) -> {ret} {{\n    x.{method}({args}){awaited} {}\n}}",
            params.join(", "),
            tag(&name, *line)
        );
        out.item(&name, &doc, &body);
    }
}

/// Prose under a type heading: "A type alias for `X`" and "Re-exported as
/// `path`" become checks too.
fn gen_prose(out: &mut Out, page: &Page) {
    for p in &page.prose {
        let ty = p.place.type_heading.clone().unwrap();
        let where_ = format!("{REFERENCE}:{} (`{ty}`)", p.line);
        if let Some(alias) = between(&p.text, "type alias for `", "`") {
            let name = format!("alias_{}_{}", snake(&ty), snake(alias));
            let doc = vec![format!("`{ty}` and `{alias}` are the same type — {where_}")];
            let body = format!(
                "pub fn {name}(x: {alias}) -> {ty} {{\n    x {}\n}}",
                tag(&name, p.line)
            );
            out.item(&name, &doc, &body);
        }
        if let Some(path) = between(&p.text, "Re-exported as `", "`") {
            let name = format!("reexport_{}", snake(&ty));
            let doc = vec![format!("`{path}` exists and is `{ty}` — {where_}")];
            let body = format!(
                "pub fn {name}(x: {path}) -> {ty} {{\n    x {}\n}}",
                tag(&name, p.line)
            );
            out.item(&name, &doc, &body);
        }
    }
}

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let source = Path::new(&manifest_dir).join(REFERENCE);
    println!("cargo:rerun-if-changed={REFERENCE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SEED_EXAMPLES_SKIP");
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let page = parse(&text);
    assert_eq!(
        text.matches("```rust").count(),
        page.blocks.len(),
        "{REFERENCE}: some ```rust block was not extracted"
    );

    let skip: BTreeSet<String> = std::env::var("SEED_EXAMPLES_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = Out {
        code: String::new(),
        skip,
        emitted: BTreeSet::new(),
    };
    writeln!(
        out.code,
        "// Generated by tests/seed-examples/build.rs from {REFERENCE}. Do not edit.\n"
    )
    .unwrap();

    // Signatures and tables: one module, with the page's types in scope.
    out.code.push_str("pub mod checks {\n");
    out.code.push_str(CHECK_PRELUDE);
    out.code.push('\n');
    let mut signatures = 0;
    for block in &page.blocks {
        if let Some(sig) = parse_signature(&block.code) {
            gen_signature(&mut out, block, &sig);
            signatures += 1;
        }
    }
    gen_tables(&mut out, &page);
    gen_prose(&mut out, &page);
    out.code.push_str("}\n\n");

    // Examples: one module, with the imports the page's first example states.
    out.code.push_str("pub mod examples {\n");
    out.code.push_str(EXAMPLE_PRELUDE);
    out.code.push('\n');
    let mut examples = Vec::new();
    for block in &page.blocks {
        if parse_signature(&block.code).is_none() {
            let n = examples.len() + 1;
            examples.push(gen_example(&mut out, block, n));
        }
    }
    // run_all: the runnable examples in page order.
    out.code.push_str(
        "/// Every example that needs no VM, in page order; `before` is told each\n\
         /// one's name first. Stops at the first error, naming the example.\n\
         pub async fn run_all(mut before: impl FnMut(&str)) -> Result<(), String> {\n",
    );
    for ex in examples.iter().filter(|e| e.runs) {
        if out.skip.contains(&ex.name) {
            writeln!(
                out.code,
                "    before(\"SKIPPED {} ({})\");",
                ex.name, ex.what
            )
            .unwrap();
        } else {
            writeln!(
                out.code,
                "    before(\"{0} ({1})\");\n    {0}().await.map_err(|e| format!(\"{0} ({1}): {{e}}\"))?;",
                ex.name, ex.what
            )
            .unwrap();
        }
    }
    out.code.push_str("    Ok(())\n}\n\n");
    let list = |runs: bool| {
        examples
            .iter()
            .filter(|e| e.runs == runs)
            .map(|e| format!("\"{}\"", e.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out.code,
        "/// Examples `run_all` runs.\npub const RUN: &[&str] = &[{}];\n\
         /// Examples that need a VM: compiled only.\npub const COMPILE_ONLY: &[&str] = &[{}];",
        list(true),
        list(false)
    )
    .unwrap();
    out.code.push_str("}\n\n");
    writeln!(
        out.code,
        "/// How many ```rust blocks the page has, and how many were signatures.\n\
         pub const BLOCKS: usize = {};\npub const SIGNATURES: usize = {signatures};",
        page.blocks.len()
    )
    .unwrap();

    let unknown: Vec<_> = out.skip.difference(&out.emitted).cloned().collect();
    if !unknown.is_empty() {
        println!("cargo:warning=SEED_EXAMPLES_SKIP names no generated item: {unknown:?}");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("reference.rs");
    std::fs::write(&dest, out.code).unwrap();
}
