//! One-way dependencies: every path into another module of the crate (`use crate::x`,
//! `use crate::{x, y::z}`, an inline `crate::x::f()`, a `super::` that climbs out to the crate
//! root) must follow an edge of the layering below, and the layering itself has no cycle.
//! `src/lib.rs`'s layout describes the same layers in words. Below the modules, no two files of
//! `src/` may take from each other, even inside a folder (the rule is written on
//! `no_file_of_the_crate_is_in_a_circle`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Modules every module may use: plain values, text bounds and the clock, which import nothing.
const LEAVES: &[&str] = &["clock", "text", "types"];

/// Each module and the modules it may use besides the leaves, lowest layer first.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("text", &[]),
    ("types", &[]),
    ("outcome", &[]),
    ("kinds", &["outcome"]),
    ("quiet_hours", &[]),
    ("config", &["kinds", "quiet_hours"]),
    ("job", &["kinds"]),
    ("retry", &["config"]),
    ("state", &["config"]),
    ("limiter", &["config", "state"]),
    ("pause", &["config", "retry"]),
    ("metrics", &["outcome"]),
    ("telemetry", &["config", "metrics"]),
    ("wechat", &["config", "outcome", "state"]),
    ("catalog", &["job", "kinds", "wechat"]),
    ("daily_quota", &["config", "kinds", "metrics", "wechat"]),
    ("broker", &["config", "metrics", "outcome", "retry"]),
    ("trail", &["outcome", "state"]),
    ("preferences", &["config", "outcome", "state"]),
    (
        "callback",
        &[
            "broker",
            "config",
            "metrics",
            "outcome",
            "preferences",
            "state",
            "telemetry",
            "trail",
            "wechat",
        ],
    ),
    ("platform", &["callback", "config", "state", "wechat"]),
    (
        "http",
        &["config", "job", "metrics", "state", "telemetry", "trail"],
    ),
    (
        "worker",
        &[
            "broker",
            "catalog",
            "config",
            "daily_quota",
            "job",
            "kinds",
            "limiter",
            "metrics",
            "outcome",
            "pause",
            "platform",
            "preferences",
            "quiet_hours",
            "retry",
            "state",
            "telemetry",
            "trail",
            "wechat",
        ],
    ),
    ("sim", &["callback", "kinds", "outcome", "wechat"]),
    (
        "startup",
        &[
            "broker",
            "callback",
            "catalog",
            "config",
            "http",
            "limiter",
            "metrics",
            "pause",
            "platform",
            "preferences",
            "retry",
            "state",
            "telemetry",
            "trail",
            "wechat",
            "worker",
        ],
    ),
    (
        "cli",
        &[
            "broker",
            "catalog",
            "config",
            "daily_quota",
            "job",
            "kinds",
            "metrics",
            "outcome",
            "platform",
            "quiet_hours",
            "retry",
            "sim",
            "startup",
            "state",
            "telemetry",
            "trail",
            "wechat",
            "worker",
        ],
    ),
];

/// An edge only code under `#[cfg(test)]` may take: from, to, and the reason.
type TestEdge = (&'static str, &'static str, &'static str);

/// Edges only code under `#[cfg(test)]` may take. None today: the pipeline's unit tests run
/// over fakes of its seams, not the simulator and the start-up wiring.
const TEST_ONLY: &[TestEdge] = &[];

/// One path into another top-level module.
#[derive(Debug, PartialEq)]
struct Use {
    line: usize,
    target: String,
    /// Inside a `#[cfg(test)]` item.
    test: bool,
}

/// The source with comments, string and character literals blanked out, byte for byte (line
/// breaks kept), so that positions and line numbers still hold and no text is read as code.
fn blank_non_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                blank(&mut out, start, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i);
            }
            b'r' if (i == 0
                || !is_ident(b[i - 1])
                || (b[i - 1] == b'b' && (i < 2 || !is_ident(b[i - 2]))))
                && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                blank(&mut out, start, i);
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                blank(&mut out, start, i);
            }
            b'\'' => {
                // A character literal ('x', '\n', '中'); otherwise a lifetime or a label.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    // The escaped character itself may be a quote: look past it.
                    b[i + 3..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 4 + p)
                } else {
                    let width = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, start, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The position just past the `}` that closes the `{` at `open`.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (i, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

fn skip_space(code: &[u8], mut i: usize) -> usize {
    while i < code.len() && code[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(code: &[u8], i: usize) -> &str {
    let end = i + code[i..].iter().take_while(|&&c| is_ident(c)).count();
    std::str::from_utf8(&code[i..end]).unwrap_or("")
}

/// The byte ranges of `#[cfg(test)]` items: from the attribute to the end of the item (its
/// block, or its `;`).
fn test_ranges(code: &[u8]) -> Vec<(usize, usize)> {
    let text = std::str::from_utf8(code).unwrap_or("");
    let mut ranges = Vec::new();
    for (at, attr) in text.match_indices("#[cfg(test)]") {
        let from = at + attr.len();
        let Some(first) = code[from..].iter().position(|&c| c == b'{' || c == b';') else {
            continue;
        };
        let mut end = from + first + 1;
        if code[from + first] == b'{' {
            end = matching_brace(code, from + first);
            let next = skip_space(code, end);
            if code.get(next) == Some(&b';') {
                end = next + 1;
            }
        }
        ranges.push((at, end));
    }
    ranges
}

/// Inline `mod name { … }` blocks: their block's range and name.
fn inline_modules(code: &[u8]) -> Vec<(usize, usize, String)> {
    let text = std::str::from_utf8(code).unwrap_or("");
    let mut found = Vec::new();
    for (at, _) in text.match_indices("mod ") {
        if at > 0 && is_ident(code[at - 1]) {
            continue;
        }
        let name_at = skip_space(code, at + 4);
        let name = ident_at(code, name_at);
        let after = skip_space(code, name_at + name.len());
        if !name.is_empty() && code.get(after) == Some(&b'{') {
            found.push((after, matching_brace(code, after), name.to_owned()));
        }
    }
    found
}

/// The first identifier of each item of a path after `::`: one, or each of a `{…}` group's.
fn heads(code: &[u8], i: usize) -> Vec<String> {
    let i = skip_space(code, i);
    if code.get(i) != Some(&b'{') {
        return vec![ident_at(code, i).to_owned()];
    }
    let end = matching_brace(code, i) - 1;
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for j in i + 1..end {
        match code[j] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => item_start = true,
            c if item_start && is_ident(c) => {
                heads.push(ident_at(code, j).to_owned());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// Every path from the file of module `module` (its path in the crate, such as
/// `["worker", "pipeline"]`) into another top-level module.
fn uses(module: &[&str], src: &str) -> Vec<Use> {
    let cleaned = blank_non_code(src);
    let code = cleaned.as_bytes();
    let tests = test_ranges(code);
    let inline = inline_modules(code);
    let line_of = |at: usize| 1 + code[..at].iter().filter(|&&c| c == b'\n').count();
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let starts_path = i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == b':');
        let rest = &code[i..];
        let (targets, len) = if starts_path && rest.starts_with(b"crate::") {
            (heads(code, i + 7), 7)
        } else if starts_path && rest.starts_with(b"super::") {
            let mut supers = 0;
            let mut j = i;
            while code[j..].starts_with(b"super::") {
                supers += 1;
                j = skip_space(code, j + 7);
            }
            // Where the path starts: the file's module plus the inline modules around it.
            let mut at: Vec<&str> = module.to_vec();
            let mut around: Vec<&(usize, usize, String)> =
                inline.iter().filter(|(o, c, _)| *o < i && i < *c).collect();
            around.sort_by_key(|(o, _, _)| *o);
            at.extend(around.iter().map(|(_, _, n)| n.as_str()));
            let climbs_to_root = supers == at.len();
            (
                if climbs_to_root {
                    heads(code, j)
                } else {
                    Vec::new()
                },
                j - i,
            )
        } else {
            (Vec::new(), 1)
        };
        for target in targets {
            if target.is_empty() || target == "self" || target == "super" || target == module[0] {
                continue;
            }
            found.push(Use {
                line: line_of(i),
                target,
                test: tests.iter().any(|(s, e)| *s <= i && i < *e),
            });
        }
        i += len;
    }
    found
}

fn allowed(from: &str, to: &str, test: bool, test_only: &[TestEdge]) -> bool {
    LEAVES.contains(&to)
        || LAYERS
            .iter()
            .any(|(m, uses)| *m == from && uses.contains(&to))
        || (test && test_only.iter().any(|(f, t, _)| *f == from && *t == to))
}

/// Every use in `files` (a display path, the module path, the source) that the layering does
/// not allow, as `file:line: from → to`.
fn violations(files: &[(String, Vec<String>, String)]) -> Vec<String> {
    violations_with(files, TEST_ONLY)
}

/// [`violations`] with `test_only` as the edges test code alone may take.
fn violations_with(files: &[(String, Vec<String>, String)], test_only: &[TestEdge]) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, module, src) in files {
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        for u in uses(&module, src) {
            if !allowed(module[0], &u.target, u.test, test_only) {
                let test = if u.test { " (in test code)" } else { "" };
                bad.push(format!(
                    "{path}:{}: {} → {}{test} is not an edge of the layering",
                    u.line, module[0], u.target
                ));
            }
        }
    }
    bad
}

/// A cycle among `edges`, if there is one, as the modules along it.
fn cycle<'a>(edges: &[(&'a str, &[&'a str])]) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        done: &mut Vec<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            let mut found = path[at..].to_vec();
            found.push(m);
            return Some(found);
        }
        if done.contains(&m) {
            return None;
        }
        path.push(m);
        for next in edges.get(m).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.push(m);
        None
    }
    let map: BTreeMap<&str, Vec<&str>> = edges.iter().map(|(m, u)| (*m, u.to_vec())).collect();
    let mut done = Vec::new();
    map.keys()
        .find_map(|m| visit(m, &map, &mut done, &mut Vec::new()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The crate's files with their module paths; the crate root (`lib.rs`, `main.rs`) is left out:
/// it only declares the modules.
fn crate_files() -> Vec<(String, Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap();
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Some((format!("src/{}", rel.display()), module, text))
        })
        .collect()
}

#[test]
fn every_module_follows_the_layering() {
    let bad = violations(&crate_files());
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_layering_has_no_cycle() {
    assert_eq!(cycle(LAYERS), None);
}

#[test]
fn every_edge_points_up_the_list_as_lib_rs_reads_it() {
    for (at, (from, uses)) in LAYERS.iter().enumerate() {
        for to in *uses {
            let above = LAYERS[..at].iter().any(|(m, _)| m == to);
            assert!(above, "{from} → {to}: {to} must come before {from}");
        }
    }
}

#[test]
fn every_module_has_a_place_in_the_layering_and_every_place_a_module() {
    let mut modules: Vec<String> = crate_files()
        .into_iter()
        .map(|(_, m, _)| m[0].clone())
        .collect();
    modules.sort();
    modules.dedup();
    let mut placed: Vec<String> = LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    placed.sort();
    assert_eq!(modules, placed);
    for (from, to, _) in TEST_ONLY {
        assert!(placed.contains(&from.to_string()) && placed.contains(&to.to_string()));
    }
}

fn file(path: &str, module: &[&str], src: &str) -> (String, Vec<String>, String) {
    (
        path.into(),
        module.iter().map(|m| m.to_string()).collect(),
        src.into(),
    )
}

#[test]
fn a_backwards_import_is_named_with_its_file_and_line() {
    let bad = violations(&[file(
        "src/config/mod.rs",
        &["config"],
        "//! Settings.\n\nuse crate::types::Secret;\nuse crate::worker::Context;\n",
    )]);
    assert_eq!(
        bad,
        ["src/config/mod.rs:4: config → worker is not an edge of the layering"]
    );
}

#[test]
fn every_form_of_path_is_read() {
    let src = r#"
use crate::{
    kinds,
    worker::{Context, run},
};
use crate::config::{self, Settings};
fn f() {
    let x = crate::http::router();
    let y = super::super::startup::Application::build();
    let z = super::sibling::g();
    let ok = crate::text::bounded("crate::sim::Simulator", 3);
    // crate::cli::main()
    /* crate::cli::main() */
    let c = 'c';
    let l: &'static str = "";
}
"#;
    let found: Vec<(usize, String)> = uses(&["job", "inner"], src)
        .into_iter()
        .map(|u| (u.line, u.target))
        .collect();
    let expected = [
        (2, "kinds"),
        (2, "worker"),
        (6, "config"),
        (8, "http"),
        (9, "startup"),
        (11, "text"),
    ];
    assert_eq!(
        found,
        expected.map(|(l, t)| (l, t.to_owned())).to_vec(),
        "a super:: that stays inside job is not an edge"
    );
}

#[test]
fn a_test_only_edge_is_allowed_in_test_code_alone() {
    let src = "use crate::broker;\n\
               #[cfg(test)]\n\
               mod tests {\n    use crate::sim::Simulator;\n    mod deeper { use super::super::super::sim; }\n}\n\
               fn f() { crate::sim::start(); }\n";
    let test_only: &[TestEdge] = &[("worker", "sim", "an example")];
    let pipeline = [file("src/worker/pipeline.rs", &["worker", "pipeline"], src)];
    let bad = violations_with(&pipeline, test_only);
    assert_eq!(
        bad,
        ["src/worker/pipeline.rs:7: worker → sim is not an edge of the layering"]
    );
    let bad = violations_with(&[file("src/http.rs", &["http"], src)], test_only);
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad[1].ends_with("http → sim (in test code) is not an edge of the layering"));
    // Without the edge, the test code's `use crate::sim` is refused too (the `super::`s
    // there stay inside worker).
    assert_eq!(violations(&pipeline).len(), 2);
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])];
    assert_eq!(cycle(edges), Some(vec!["a", "b", "c", "a"]));
    let edges: &[(&str, &[&str])] = &[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])];
    assert_eq!(cycle(edges), None);
}

// ---------------------------------------------------------------------------------------------
// Circles between files: the rule is written on `no_file_of_the_crate_is_in_a_circle`.

/// One path from a file to another file's module.
#[derive(Debug, PartialEq)]
struct FileUse {
    line: usize,
    /// The module path named, from the crate root (`["worker", "deps", "Seams"]`).
    path: Vec<String>,
}

/// The full paths of a path tree starting at `i` after `prefix`: one, or one per item of a
/// `{…}` group (`self` in a group names the prefix itself).
fn path_tree(code: &[u8], i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let i = skip_space(code, i);
    if code.get(i) == Some(&b'{') {
        let end = matching_brace(code, i) - 1;
        let mut depth = 0;
        let mut item_start = true;
        for j in i + 1..end {
            match code[j] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b',' if depth == 0 => item_start = true,
                c if item_start && (is_ident(c) || c == b'{' || c == b'*') => {
                    item_start = false;
                    path_tree(code, j, prefix.clone(), out);
                    if c == b'{' {
                        depth += 1;
                    }
                }
                _ => {}
            }
        }
        return;
    }
    let name = ident_at(code, i);
    let after = skip_space(code, i + name.len());
    let mut next = prefix;
    if !name.is_empty() && name != "self" {
        next.push(name.to_owned());
    }
    if !name.is_empty() && code[after..].starts_with(b"::") {
        path_tree(code, after + 2, next, out);
    } else {
        out.push(next);
    }
}

/// The `mod name;` declarations of a file (not inline blocks), each with whether it is under
/// `#[cfg(test)]`.
fn declared_children(src: &str) -> Vec<(String, bool)> {
    let cleaned = blank_non_code(src);
    let code = cleaned.as_bytes();
    let tests = test_ranges(code);
    let mut found = Vec::new();
    for (at, _) in cleaned.match_indices("mod ") {
        if at > 0 && is_ident(code[at - 1]) {
            continue;
        }
        let name_at = skip_space(code, at + 4);
        let name = ident_at(code, name_at);
        let after = skip_space(code, name_at + name.len());
        if !name.is_empty() && code.get(after) == Some(&b';') {
            let test = tests.iter().any(|(s, e)| *s <= at && at < *e);
            found.push((name.to_owned(), test));
        }
    }
    found
}

/// Every path outside `#[cfg(test)]` items of the file of `module` into the crate's modules,
/// made absolute: `crate::`, `super::`, `self::` and the declared children's names.
fn file_uses(module: &[&str], src: &str) -> Vec<FileUse> {
    let cleaned = blank_non_code(src);
    let code = cleaned.as_bytes();
    let tests = test_ranges(code);
    let inline = inline_modules(code);
    let children: Vec<String> = declared_children(src).into_iter().map(|(n, _)| n).collect();
    let line_of = |at: usize| 1 + code[..at].iter().filter(|&&c| c == b'\n').count();
    let own = |s: &[&str]| s.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let starts_path = i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == b':');
        if !starts_path || tests.iter().any(|(s, e)| *s <= i && i < *e) {
            i += 1;
            continue;
        }
        // Where a relative path starts: the file's module plus the inline modules around it.
        let mut at = own(module);
        let mut around: Vec<&(usize, usize, String)> =
            inline.iter().filter(|(o, c, _)| *o < i && i < *c).collect();
        around.sort_by_key(|(o, _, _)| *o);
        at.extend(around.iter().map(|(_, _, n)| n.clone()));
        let rest = &code[i..];
        let name = ident_at(code, i);
        let (start, prefix, len) = if rest.starts_with(b"crate::") {
            (i + 7, Vec::new(), 7)
        } else if rest.starts_with(b"super::") {
            let mut j = i;
            while code[j..].starts_with(b"super::") {
                at.pop();
                j = skip_space(code, j + 7);
            }
            (j, at, j - i)
        } else if rest.starts_with(b"self::") {
            (i + 6, at, 6)
        } else if !name.is_empty()
            && children.iter().any(|c| c == name)
            && code[skip_space(code, i + name.len())..].starts_with(b"::")
        {
            (i, own(module), name.len())
        } else {
            i += name.len().max(1);
            continue;
        };
        let mut paths = Vec::new();
        path_tree(code, start, prefix, &mut paths);
        for path in paths {
            found.push(FileUse {
                line: line_of(i),
                path,
            });
        }
        i += len;
    }
    found
}

/// The file edges among `files` (a display path, the module path, the source): for each file,
/// the files it uses with the first line that does. Files declared under `#[cfg(test)]`, and
/// those below them, use nothing.
fn file_edges(files: &[(String, Vec<String>, String)]) -> Vec<Vec<(usize, usize)>> {
    let index: BTreeMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(n, (_, m, _))| (m.as_slice(), n))
        .collect();
    let test_files: Vec<&[String]> = files
        .iter()
        .flat_map(|(_, m, src)| {
            declared_children(src)
                .into_iter()
                .filter(|(_, test)| *test)
                .map(move |(child, _)| {
                    let mut path = m.clone();
                    path.push(child);
                    path
                })
        })
        .filter_map(|path| index.get_key_value(path.as_slice()).map(|(k, _)| *k))
        .collect();
    files
        .iter()
        .enumerate()
        .map(|(from, (_, module, src))| {
            if test_files.iter().any(|t| module.starts_with(t)) {
                return Vec::new();
            }
            let module: Vec<&str> = module.iter().map(String::as_str).collect();
            let mut to: Vec<(usize, usize)> = Vec::new();
            for u in file_uses(&module, src) {
                let target = (1..=u.path.len())
                    .rev()
                    .find_map(|n| index.get(&u.path[..n]).copied());
                if let Some(target) = target
                    && target != from
                    && !to.iter().any(|(t, _)| *t == target)
                {
                    to.push((target, u.line));
                }
            }
            to
        })
        .collect()
}

/// Every circle among the files, one per strongly connected group, each written as its files
/// and the lines that close it: `a.rs:3 → b.rs`, `b.rs:7 → a.rs`.
fn file_circles(files: &[(String, Vec<String>, String)]) -> Vec<String> {
    let edges = file_edges(files);
    // Tarjan's strongly connected components.
    struct Walk<'a> {
        edges: &'a [Vec<(usize, usize)>],
        order: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        groups: Vec<Vec<usize>>,
    }
    fn visit(w: &mut Walk<'_>, v: usize) {
        w.order[v] = Some(w.next);
        w.low[v] = w.next;
        w.next += 1;
        w.stack.push(v);
        w.on_stack[v] = true;
        for &(t, _) in &w.edges[v] {
            match w.order[t] {
                None => {
                    visit(w, t);
                    w.low[v] = w.low[v].min(w.low[t]);
                }
                Some(o) if w.on_stack[t] => w.low[v] = w.low[v].min(o),
                Some(_) => {}
            }
        }
        if Some(w.low[v]) == w.order[v] {
            let mut group = Vec::new();
            while let Some(t) = w.stack.pop() {
                w.on_stack[t] = false;
                group.push(t);
                if t == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                w.groups.push(group);
            }
        }
    }
    let n = files.len();
    let mut walk = Walk {
        edges: &edges,
        order: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..n {
        if walk.order[v].is_none() {
            visit(&mut walk, v);
        }
    }
    walk.groups.sort();
    walk.groups
        .iter()
        .map(|group| {
            let mut lines = Vec::new();
            for &from in group {
                for &(to, line) in &edges[from] {
                    if group.contains(&to) {
                        lines.push(format!("{}:{line} → {}", files[from].0, files[to].0));
                    }
                }
            }
            lines.join(", ")
        })
        .collect()
}

/// No file of the crate is in a circle with another.
///
/// The rule: draw an edge from file A to file B of `src/` when A's code (outside `#[cfg(test)]`
/// items) names a path whose module is B's module: `crate::b::Item`, `super::Item`,
/// `self::b::Item`, a declared child's `child::Item`, each item of a `use` list, a `pub(crate) use
/// child::Item` re-export, a `use super::*`. The module of a path is the longest prefix of it that
/// is a file's module, so `super::Item` is the parent's file even when the parent only re-exports
/// `Item` from elsewhere: re-exports are not followed, and a file names the file that defines what
/// it takes. Declaring `mod child;` alone is no edge (it makes the child, it takes nothing from
/// it); a name brought in by a `use` counts once, at the `use`. The graph must have no cycle of
/// any length: in particular a child may not take an item of its parent's file while the parent
/// takes one of the child's. Each circle found is printed with the lines that close it.
/// Exempt, because tests may use their parent: code under `#[cfg(test)]`, and files declared
/// under `#[cfg(test)]` with everything below them.
/// The crate root (`lib.rs`, `main.rs`) only declares the modules and is left out.
#[test]
fn no_file_of_the_crate_is_in_a_circle() {
    let circles = file_circles(&crate_files());
    assert!(
        circles.is_empty(),
        "circles between files:\n{}",
        circles.join("\n")
    );
}

#[test]
fn every_form_of_path_names_its_file() {
    let src = r#"
mod child;
#[cfg(test)]
mod tests;
pub(crate) use child::{Item, deeper::Other};
use super::{self, sibling::Thing};
use crate::config::{Settings, values::Rate};
fn f() {
    let a = self::child::g();
    let b = super::super::top();
    let s = "crate::sim::Simulator";
    let x = notachild::h();
}
#[cfg(test)]
mod t { use crate::sim::Simulator; }
"#;
    let found: Vec<(usize, String)> = file_uses(&["worker", "pipeline"], src)
        .into_iter()
        .map(|u| (u.line, u.path.join("::")))
        .collect();
    let expected = [
        (5, "worker::pipeline::child::Item"),
        (5, "worker::pipeline::child::deeper::Other"),
        (6, "worker"),
        (6, "worker::sibling::Thing"),
        (7, "config::Settings"),
        (7, "config::values::Rate"),
        (9, "worker::pipeline::child::g"),
        (10, "top"),
    ];
    assert_eq!(
        found,
        expected.map(|(l, p)| (l, p.to_owned())).to_vec(),
        "test code is left out"
    );
}

#[test]
fn a_child_taking_from_its_parent_while_the_parent_takes_from_it_is_a_circle() {
    let parent =
        "//! P.\nmod child;\nmod other;\npub(crate) use child::Made;\npub(crate) struct Shared;\n";
    let child = "//! C.\nuse super::Shared;\npub(crate) struct Made;\n";
    let other = "//! O.\nuse super::child::Made;\n";
    let files = [
        file("src/p/mod.rs", &["p"], parent),
        file("src/p/child.rs", &["p", "child"], child),
        file("src/p/other.rs", &["p", "other"], other),
    ];
    assert_eq!(
        file_circles(&files),
        ["src/p/mod.rs:4 → src/p/child.rs, src/p/child.rs:2 → src/p/mod.rs"]
    );
    // With the shared item in a file of its own, the circle is gone.
    let parent = "//! P.\nmod child;\nmod shared;\npub(crate) use child::Made;\n";
    let child = "//! C.\nuse super::shared::Shared;\npub(crate) struct Made;\n";
    let files = [
        file("src/p/mod.rs", &["p"], parent),
        file("src/p/child.rs", &["p", "child"], child),
        file(
            "src/p/shared.rs",
            &["p", "shared"],
            "//! S.\npub(crate) struct Shared;\n",
        ),
    ];
    assert_eq!(file_circles(&files), Vec::<String>::new());
}

#[test]
fn tests_may_use_their_parent() {
    let parent = "//! P.\nmod child;\n#[cfg(test)]\nmod tests;\npub(crate) use child::Made;\npub(crate) struct Shared;\n#[cfg(test)]\nmod inline { use super::child::Made; }\n";
    let child =
        "//! C.\npub(crate) struct Made;\n#[cfg(test)]\nmod tests { use super::super::Shared; }\n";
    let files = [
        file("src/p/mod.rs", &["p"], parent),
        file("src/p/child.rs", &["p", "child"], child),
        file(
            "src/p/tests.rs",
            &["p", "tests"],
            "//! T.\nuse super::*;\nmod fakes;\n",
        ),
        file(
            "src/p/tests/fakes.rs",
            &["p", "tests", "fakes"],
            "//! F.\nuse crate::p::child::Made;\nuse super::super::Shared;\n",
        ),
    ];
    assert_eq!(file_circles(&files), Vec::<String>::new());
}
