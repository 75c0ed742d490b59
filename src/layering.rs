//! The rooms' floors, checked: a module may import only modules on lower floors (its own room aside), so data
//! flows one way — readers → labelers → shards → training → evaluation → config → pipeline — and there are no
//! cycles. Test code (`mod tests`) may reach up.

/// Floors from the ground up; rooms on one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &["error"],
    &["io", "observations", "progress", "run_dir"],
    &["data"],
    &["comm"],
    &["model"],
    &["learn"],
    &["labelers"],
    &["shard"],
    &["eval"],
    &["train"],
    &["config"],
    &["inspect", "pipeline"],
];

fn floor(room: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&room))
}

/// `crate::<room>` names in `text`, test modules cut off, including those inside `use crate::{a::.., b::..}`.
fn imports(text: &str) -> Vec<String> {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    let mut out = Vec::new();
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(
                group
                    .split(',')
                    .map(|p| ident(p.trim()))
                    .filter(|p| !p.is_empty()),
            );
        } else {
            out.push(ident(rest));
        }
    }
    out
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_room_imports_a_room_on_its_floor_or_above() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let room = first.trim_end_matches(".rs");
        // The binary's command line and the crate root sit above every room.
        if matches!(room, "main" | "lib" | "cli" | "layering") {
            continue;
        }
        let own =
            floor(room).unwrap_or_else(|| panic!("src/{room} is on no floor: add it to FLOORS"));
        let text = std::fs::read_to_string(f).unwrap();
        for to in imports(&text) {
            if to == room {
                continue;
            }
            match floor(&to) {
                Some(k) if k < own => {}
                _ => wrong.push(format!("{} imports crate::{to}", rel.display())),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "upward or sideways imports:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_scan_sees_grouped_and_plain_paths() {
    let found = imports(
        "use crate::{data::Split, io::hex};\nfn f() { crate::train::x(); }\n#[cfg(test)]\nmod tests { use crate::pipeline; }",
    );
    assert_eq!(found, ["data", "io", "train"]);
}
