//! The layer order of the library's top-level modules, checked against the source: every
//! `crate::` path (in `use` lines, `use crate::{a::x, b::y}` groups and inline paths) and every
//! `super::` path that climbs to the crate root must point down [`ORDER`], and the module graph
//! must have no cycle. The binary (`src/cli/`, `src/main.rs`) is the top layer and is not read.
//! docs/architecture.md ("Layers") says why each layer sits where it does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, bottom first: a module may use only modules listed before it.
const ORDER: &[&str] = &[
    "util",
    "telemetry",
    "clock",
    "tlog",
    "config",
    "keys",
    "logout_token",
    "store",
    "ledger",
    "export",
    "delivery",
    "http",
    "api",
    "startup",
    "local_issuer",
];

/// One reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    file: String,
    line: usize,
    from: String,
    to: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Replaces comments and the insides of string and character literals with spaces, keeping
/// line breaks, so that only code is searched.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&c, i) {
            // r"..." or r#"..."#: no escapes, ends at a quote followed by as many hashes.
            let open = 2 + hashes;
            (0..open).for_each(|k| blank(&mut out, c[i + k]));
            i += open;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    (0..=hashes).for_each(|_| out.push(' '));
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if let Some(&ch) = c.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && char_literal_len(&c, i) > 0 {
            let len = char_literal_len(&c, i);
            (0..len).for_each(|k| blank(&mut out, c[i + k]));
            i += len;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The number of `#` after `r` (or `br`) when a raw string starts at `i`.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    if c[i] != 'r' || (ident_before && c[i - 1] != 'b') {
        return None;
    }
    let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
    (c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// The length of a character literal starting at `i` (`'a'`, `'\n'`, `'\u{7f}'`), or 0 when the
/// quote opens a lifetime.
fn char_literal_len(c: &[char], i: usize) -> usize {
    match (c.get(i + 1), c.get(i + 2)) {
        (Some('\\'), _) => c
            .get(i + 3..)
            .and_then(|rest| rest.iter().position(|&ch| ch == '\''))
            .map_or(0, |p| p + 4),
        (Some(_), Some('\'')) => 3,
        _ => 0,
    }
}

/// Identifiers, `::` and single punctuation characters, each with its 1-based line.
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((line, Token::Ident(c[start..i].iter().collect())));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            out.push((line, Token::Punct(c[i])));
            i += 1;
        }
    }
    out
}

fn is_ident(t: Option<&(usize, Token)>, name: &str) -> bool {
    matches!(t, Some((_, Token::Ident(s))) if s == name)
}

/// The first segment after a path root at `toks[i]`: one name, or every first name in a
/// `{a::x, b::{y, z}}` group, each with its line.
fn first_segments(toks: &[(usize, Token)], i: usize) -> Vec<(usize, String)> {
    match toks.get(i) {
        Some((line, Token::Ident(name))) => vec![(*line, name.clone())],
        Some((_, Token::Punct('{'))) => {
            let (mut depth, mut expect_name, mut names) = (0, true, Vec::new());
            for (line, tok) in &toks[i..] {
                match tok {
                    Token::Punct('{') => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    Token::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Punct(',') => expect_name = depth == 1,
                    Token::Ident(name) if expect_name => {
                        names.push((*line, name.clone()));
                        expect_name = false;
                    }
                    _ => expect_name = false,
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

/// Every top-level module a file names through `crate::` or a `super::` chain that reaches
/// the crate root. `depth` is the file's module depth (`src/a.rs` 1, `src/a/b.rs` 2); inline
/// `mod x { .. }` blocks add to it.
fn references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    let mut braces = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new();
    for (i, (_, tok)) in toks.iter().enumerate() {
        let after_sep = i > 0 && toks[i - 1].1 == Token::PathSep;
        match tok {
            Token::Punct('{') => braces += 1,
            Token::Punct('}') => {
                braces = braces.saturating_sub(1);
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
            }
            Token::Ident(kw)
                if kw == "mod" && matches!(toks.get(i + 2), Some((_, Token::Punct('{')))) =>
            {
                inline_mods.push(braces);
            }
            Token::Ident(kw)
                if kw == "crate"
                    && !after_sep
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Token::PathSep) =>
            {
                out.extend(first_segments(&toks, i + 2));
            }
            Token::Ident(kw) if kw == "super" && !after_sep => {
                let mut k = 0;
                while is_ident(toks.get(i + 2 * k), "super")
                    && toks.get(i + 2 * k + 1).map(|t| &t.1) == Some(&Token::PathSep)
                {
                    k += 1;
                }
                if k > 0 && k == depth + inline_mods.len() {
                    out.extend(first_segments(&toks, i + 2 * k));
                }
            }
            _ => {}
        }
    }
    out.retain(|(_, name)| name != "self");
    out
}

/// The top-level module of a file under `src/` and its module depth, from its relative path.
fn module_of(rel: &str) -> (String, usize) {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    let depth = parts.len() - usize::from(parts.last() == Some(&"mod"));
    (parts[0].to_owned(), depth)
}

/// Every cross-module reference in `files` (paths relative to `src/`, with their text).
fn graph(files: &[(String, String)], modules: &BTreeSet<String>) -> Vec<Reference> {
    let mut out = Vec::new();
    for (rel, src) in files {
        let (from, depth) = module_of(rel);
        for (line, to) in references(&strip(src), depth) {
            if to != from && modules.contains(&to) {
                out.push(Reference {
                    file: format!("src/{rel}"),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    out
}

/// One message per reference that points up `order` or names a module missing from it.
fn upward(refs: &[Reference], order: &[&str]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| *o == m);
    refs.iter()
        .filter_map(|r| match (rank(&r.from), rank(&r.to)) {
            (Some(f), Some(t)) if t < f => None,
            (Some(_), Some(_)) => Some(format!(
                "{}:{}: `{}` uses `{}`, which is above it in the layer order",
                r.file, r.line, r.from, r.to
            )),
            _ => Some(format!(
                "{}:{}: `{}` uses `{}`, and one of them is not in the layer order",
                r.file, r.line, r.from, r.to
            )),
        })
        .collect()
}

/// A cycle in the module graph, as `a -> b (file:line) -> .. -> a`, if there is one.
fn cycle(refs: &[Reference]) -> Option<String> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Reference>> = BTreeMap::new();
    for r in refs {
        edges.entry(&r.from).or_default().entry(&r.to).or_insert(r);
    }
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, BTreeMap<&'a str, &'a Reference>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a Reference>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|r| r.from == m) {
            let hops: Vec<String> = path[start..]
                .iter()
                .map(|r| format!("{} -> {} ({}:{})", r.from, r.to, r.file, r.line))
                .collect();
            return Some(hops.join(", "));
        }
        if !done.insert(m) {
            return None;
        }
        for (to, r) in edges.get(m).into_iter().flatten() {
            path.push(r);
            let found = visit(to, edges, done, path);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        None
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = edges.keys().copied().collect();
    starts
        .into_iter()
        .find_map(|m| visit(m, &edges, &mut done, &mut Vec::new()))
}

/// The modules `lib.rs` declares.
fn declared(lib: &str) -> BTreeSet<String> {
    let toks = tokens(&strip(lib));
    toks.windows(3)
        .filter_map(|w| match (&w[0].1, &w[1].1, &w[2].1) {
            (Token::Ident(kw), Token::Ident(name), Token::Punct(';')) if kw == "mod" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every library file under `src/` (not `lib.rs`, `main.rs` or the binary's `cli/`), as its
/// path relative to `src/` and its text.
fn library_files(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).expect("src/ is readable");
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if rel != "cli" {
                    walk(&path, root, out);
                }
            } else if rel.ends_with(".rs") && rel != "lib.rs" && rel != "main.rs" {
                let text = std::fs::read_to_string(&path).expect("source is UTF-8");
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    fn library() -> (BTreeSet<String>, Vec<Reference>) {
        let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs");
        let modules = declared(&lib);
        let refs = graph(&library_files(&src_dir()), &modules);
        (modules, refs)
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
            .collect()
    }

    fn modules(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn every_import_in_the_library_points_down() {
        let (_, refs) = library();
        assert!(
            refs.len() > 50,
            "the scan found only {} references",
            refs.len()
        );
        let up = upward(&refs, ORDER);
        assert!(up.is_empty(), "imports that point up:\n{}", up.join("\n"));
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let (_, refs) = library();
        if let Some(found) = cycle(&refs) {
            panic!("the module graph has a cycle: {found}");
        }
    }

    #[test]
    fn the_layer_order_lists_every_module_once() {
        let (mut declared, _) = library();
        declared.remove("layers"); // this check itself, compiled for tests only
        let listed: BTreeSet<String> = ORDER.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(listed.len(), ORDER.len(), "a module is listed twice");
        assert_eq!(listed, declared, "ORDER and lib.rs disagree");
        for (rel, _) in library_files(&src_dir()) {
            let (m, _) = module_of(&rel);
            assert!(
                listed.contains(&m) || m == "layers",
                "src/{rel} is in no listed module"
            );
        }
    }

    #[test]
    fn use_groups_inline_paths_and_super_to_the_root_are_found() {
        let code = "use crate::{\n    a::x,\n    b::{self, y},\n};\n\
                    fn f() { crate::c::g(); }\n\
                    mod tests {\n    use super::*;\n    use super::super::d::z;\n}\n\
                    pub(crate) fn h() {}\n";
        let found = references(&strip(code), 1);
        let expect = [(2, "a"), (3, "b"), (5, "c"), (8, "d")];
        let expect: Vec<(usize, String)> =
            expect.iter().map(|(l, m)| (*l, m.to_string())).collect();
        assert_eq!(found, expect);
        assert!(
            references("use super::e::f;", 2).is_empty(),
            "a sibling, not the root"
        );
        assert_eq!(references("use super::e::f;", 1), vec![(1, "e".to_owned())]);
    }

    #[test]
    fn comments_strings_and_lifetimes_are_not_code() {
        let code = "// use crate::a;\n/* crate::b /* nested */ crate::c */\n\
                    let s = \"crate::d \\\" crate::e\";\nlet r = r#\"crate::f \"x\" \"#;\n\
                    let q = '\"'; fn k<'a>(x: &'a str) -> &'a str { crate::g::h(x) }\n";
        assert_eq!(references(&strip(code), 1), vec![(5, "g".to_owned())]);
    }

    #[test]
    fn an_upward_import_is_named_by_file_and_line() {
        let src = files(&[
            (
                "store/location.rs",
                "//! doc\n\nuse crate::startup::redact_url;\n",
            ),
            ("startup.rs", "use crate::store::AuditStore;\n"),
        ]);
        let refs = graph(&src, &modules(&["store", "startup"]));
        let up = upward(&refs, &["store", "startup"]);
        assert_eq!(
            up,
            vec![
                "src/store/location.rs:3: `store` uses `startup`, which is above it in the layer order"
            ]
        );
        let missing = upward(&refs, &["store"]);
        assert_eq!(missing.len(), 2, "{missing:?}");
    }

    #[test]
    fn a_cycle_is_named_edge_by_edge() {
        let src = files(&[
            ("config/mod.rs", "use crate::ledger::Settings;\n"),
            ("ledger/verify.rs", "\nuse crate::store::Reader;\n"),
            ("store/mod.rs", "fn f() { crate::config::x(); }\n"),
            ("util.rs", "use crate::config::y;\n"),
        ]);
        let refs = graph(&src, &modules(&["config", "ledger", "store", "util"]));
        assert_eq!(
            cycle(&refs).as_deref(),
            Some(
                "config -> ledger (src/config/mod.rs:1), ledger -> store (src/ledger/verify.rs:2), \
                 store -> config (src/store/mod.rs:1)"
            )
        );
        assert_eq!(cycle(&refs[1..]), None);
    }
}
