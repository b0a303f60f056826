//! Repository-wide checks, run by the ordinary test command: every Rust
//! module says what it is for in a `//!` line, no stray `dbg!`/`todo!`, and
//! the README documents every server flag.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::cmd::root;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() && !matches!(name, "target" | "node_modules" | ".git") {
                rust_files(&p, out);
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        for krate in ["protocol", "hub-core", "server", "cli-client", "xtask"] {
            rust_files(&root().join(krate), &mut files);
        }
        assert!(files.len() > 20, "found too few sources: {}", files.len());
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }

    #[test]
    fn every_module_has_a_doc_line() {
        for (path, text) in sources() {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            assert!(
                first.starts_with("//!"),
                "{} has no //! doc line",
                path.display()
            );
        }
    }

    #[test]
    fn no_debugging_leftovers() {
        let banned = [
            concat!("dbg", "!("),
            concat!("todo", "!("),
            concat!("unimplemented", "!("),
        ];
        for (path, text) in sources() {
            for b in banned {
                assert!(!text.contains(b), "{} contains {b}", path.display());
            }
        }
    }

    #[test]
    fn readme_documents_every_server_flag() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let config = std::fs::read_to_string(root().join("server/src/config.rs")).unwrap();
        let mut flags = 0;
        for line in config.lines() {
            if let Some(env) = line
                .split("env = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                flags += 1;
                assert!(readme.contains(env), "README does not mention {env}");
            }
        }
        assert_eq!(flags, 11);
    }
}
