//! The layout's import rules (docs/development/architecture.md), checked on the source: each
//! folder of `src/` imports only the folders below it, so the pure model never reaches process
//! spawning and the flows never reach an adapter. Test code (`tests.rs` files and `#[cfg(test)]`
//! modules) may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room of `src/` and the rooms it may import (besides itself).
const RULES: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("model", &["sys"]),
    ("telemetry", &["model", "sys"]),
    ("ports", &["model", "sys"]),
    ("config", &["model", "sys"]),
    ("tfe_files", &["config", "ports", "model", "sys"]),
    (
        "adapters",
        &["config", "ports", "telemetry", "model", "sys"],
    ),
    (
        "node",
        &["tfe_files", "config", "ports", "telemetry", "model", "sys"],
    ),
    ("repave", &["ports", "model", "sys"]),
    ("observe", &["node", "config", "telemetry", "model", "sys"]),
    ("cli", &["config"]),
    (
        "app",
        &[
            "observe",
            "repave",
            "node",
            "telemetry",
            "adapters",
            "tfe_files",
            "config",
            "ports",
            "model",
            "sys",
            "cli",
        ],
    ),
];

const ROOMS: &[&str] = &[
    "sys",
    "model",
    "telemetry",
    "ports",
    "config",
    "tfe_files",
    "adapters",
    "node",
    "repave",
    "observe",
    "cli",
    "app",
    "testing",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The room a file belongs to: its first folder under src/, or its own name for `app.rs`,
/// `cli.rs`; `None` for the crate root and `main.rs`.
fn room(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first),
    }
}

/// The code of a file that is not test code, without comments.
fn product_code(file: &Path) -> String {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    strip_tests_and_comments(&std::fs::read_to_string(file).expect("read source"))
}

fn strip_tests_and_comments(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        // Inline test modules sit at the end of a file.
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every room named as `crate::ROOM` in `code`.
fn imported_rooms(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ROOMS.contains(&name.as_str()) {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_room_imports_only_the_rooms_below_it() {
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(room) = room(file) else { continue };
        if room == "testing" {
            continue;
        }
        let allowed = rules.get(room.as_str()).unwrap_or_else(|| {
            panic!(
                "{} is in a room with no rule: add it to RULES",
                file.display()
            )
        });
        checked += 1;
        for imported in imported_rooms(&product_code(file)) {
            if imported != room && !allowed.contains(&imported.as_str()) {
                broken.push(format!(
                    "{} ({room}) imports {imported}",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} files checked: is the scan broken?"
    );
    assert!(
        broken.is_empty(),
        "imports against the layout:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_scan_sees_an_upward_import() {
    let code = "use crate::model::lifecycle::Phase;\nuse crate::adapters::host;\n// crate::node in a comment\n#[cfg(test)]\nmod tests {\n    use crate::app;\n}\n";
    let rooms = imported_rooms(&strip_tests_and_comments(code));
    assert!(
        rooms.contains("adapters") && rooms.contains("model"),
        "{rooms:?}"
    );
    assert!(
        !rooms.contains("node") && !rooms.contains("app"),
        "{rooms:?}"
    );
}
