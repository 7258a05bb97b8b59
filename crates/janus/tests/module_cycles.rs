//! No module of a workspace crate depends, directly or through others, on a module that
//! depends on it: dependencies between sibling modules point one way.
//!
//! A module's dependencies are the `crate::` and `super::` paths in its source outside
//! its test modules (`use` trees expanded); a path into a child of a sibling counts as a
//! dependency on that sibling. Children may use their ancestors (that is how Rust nests
//! modules), so only edges between siblings are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`a::b`, empty for the crate root) -> source without test modules.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let last = parts.last().cloned().unwrap_or_default();
            if last == "tests" || last.ends_with("_tests") {
                continue; // a test module in its own file
            }
            if ["mod", "lib", "main"].contains(&last.as_str()) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(parts.join("::"), without_tests(&strip_comments(&text)));
        }
    }
    out
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The source up to its first inline `#[cfg(test)] mod ... {`.
fn without_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if next.is_some_and(|n| n.contains("mod ") && n.contains('{')) {
                return lines[..i].join("\n");
            }
        }
    }
    text.to_string()
}

/// Every `crate::...` / `super::...` path in `text`, `use` trees expanded, as segments.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let root = ["crate::", "super::"]
            .into_iter()
            .find(|r| at_word_start && bytes[i..].starts_with(r.as_bytes()));
        match root {
            Some(r) => {
                let (tree, len) = use_tree(&text[i..]);
                expand(&tree, &mut Vec::new(), &mut out);
                i += len.max(r.len());
            }
            None => i += 1,
        }
    }
    out
}

/// A path with an optional `{...}` group at its end, as written.
#[derive(Debug)]
struct Tree {
    segments: Vec<String>,
    group: Vec<Tree>,
}

/// Parses the path (and group) at the start of `s`; returns it and its length in bytes.
fn use_tree(s: &str) -> (Tree, usize) {
    let mut segments = Vec::new();
    let mut group = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i > start {
            segments.push(s[start..i].to_string());
        }
        if s[i..].starts_with("::{") {
            i += 3;
            loop {
                while i < b.len() && (b[i] == b' ' || b[i] == b'\n' || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (t, len) = use_tree(&s[i..]);
                group.push(t);
                i += len.max(1);
            }
            break;
        } else if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    (Tree { segments, group }, i)
}

fn expand(t: &Tree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let n = prefix.len();
    prefix.extend(t.segments.iter().cloned());
    if t.group.is_empty() {
        out.push(prefix.clone());
    }
    for g in &t.group {
        expand(g, prefix, out);
    }
    prefix.truncate(n);
}

/// Sibling-level edges `(from, to)` with the module pairs that cause each.
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let own: Vec<&str> = m.split("::").filter(|s| !s.is_empty()).collect();
        for p in paths(text) {
            let mut full: Vec<&str> = Vec::new();
            let mut segs = p.iter().map(String::as_str).peekable();
            match segs.next() {
                Some("crate") => {}
                Some("super") => {
                    full.extend(&own[..own.len().saturating_sub(1)]);
                    while segs.peek() == Some(&"super") {
                        segs.next();
                        full.pop();
                    }
                }
                _ => continue,
            }
            full.extend(segs);
            // The longest prefix that names a module.
            let Some(target) = (1..=full.len())
                .rev()
                .map(|k| full[..k].join("::"))
                .find(|c| mods.contains_key(c))
            else {
                continue;
            };
            let tgt: Vec<&str> = target.split("::").collect();
            let common = own.iter().zip(&tgt).take_while(|(a, b)| a == b).count();
            if common >= own.len() || common >= tgt.len() {
                continue; // itself, an ancestor or a descendant
            }
            let from = own[..=common].join("::");
            let to = tgt[..=common].join("::");
            out.entry((from, to))
                .or_default()
                .insert(format!("{m} -> {target}"));
        }
    }
    out
}

/// A cycle in the graph, if any, as its nodes in order.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        stack.push(v.to_string());
        for w in graph.get(v).into_iter().flatten() {
            match state.get(w.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == w).unwrap();
                    return Some(stack[at..].to_vec());
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(w, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in graph.keys() {
        if !state.contains_key(v) {
            if let Some(c) = visit(v, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn crate_cycle(src: &Path) -> Option<String> {
    let mods = modules(src);
    let edges = edges(&mods);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    let cycle = find_cycle(&graph)?;
    let mut report = format!("{}: module cycle {}\n", src.display(), cycle.join(" -> "));
    for (i, from) in cycle.iter().enumerate() {
        let to = &cycle[(i + 1) % cycle.len()];
        for why in &edges[&(from.clone(), to.clone())] {
            report += &format!("  {why}\n");
        }
    }
    Some(report)
}

fn workspace_crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn no_crate_of_the_workspace_has_a_module_cycle() {
    let crates = workspace_crates();
    assert!(crates.len() >= 3, "found only {crates:?}");
    let cycles: Vec<String> = crates.iter().filter_map(|c| crate_cycle(c)).collect();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_and_its_cause() {
    let dir = std::env::temp_dir().join(format!("janus-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    write("lib.rs", "mod a;\nmod b;\nmod c;\n");
    write("a.rs", "use crate::{c::X, b::inner::{Y, Z}};\n");
    write(
        "b/mod.rs",
        "pub mod inner;\n// crate::a is only mentioned in a comment\n",
    );
    write(
        "b/inner.rs",
        "pub struct Y;\npub struct Z;\nfn f() { super::super::c::g() }\n",
    );
    write(
        "c.rs",
        "pub struct X;\npub fn g() {}\n#[cfg(test)]\nmod tests {\n    use crate::b::inner::Y;\n}\n",
    );
    assert_eq!(crate_cycle(&dir), None, "no cycle yet");
    write("c.rs", "pub struct X;\npub fn g() { crate::a::h() }\n");
    let report = crate_cycle(&dir).expect("a -> b -> c -> a");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(report.contains("b::inner -> c"), "{report}");
    assert!(report.contains("c -> a"), "{report}");
}
