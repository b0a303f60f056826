//! Repository-wide checks, run by the ordinary test command: every Rust
//! module says what it is for in a `//!` line, no stray `dbg!`/`todo!`, the
//! README and `docs/protocol.md` document every server flag, and the guide
//! names every frame type and error code the protocol crate puts on the wire.
//!
//! xtask does not depend on the server or protocol crates (it builds and runs
//! them), so the lists are read from their sources: the `#[arg]` attributes
//! of `server/src/config.rs` and the serde enums of `protocol/src/`. A new
//! flag, frame or code then fails here until the docs say what it is.

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

    fn read(path: &str) -> String {
        let p = root().join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
    }

    /// Whether `text` names `word` on its own, not as part of a longer name:
    /// `--max-user` inside `--max-user-groups` does not count.
    fn mentions(text: &str, word: &str) -> bool {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        text.match_indices(word).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + word.len()..].chars().next();
            !before.is_some_and(is_name) && !after.is_some_and(is_name)
        })
    }

    /// One server flag: its `--long` name and its environment variable.
    #[derive(Debug)]
    struct Flag {
        long: String,
        env: String,
    }

    /// `key = "value"`, the start of one comma-separated part of an
    /// attribute, → `value`.
    fn quoted(part: &str, key: &str) -> Option<String> {
        let value = part.strip_prefix(key)?.trim_start().strip_prefix('=')?;
        // Up to the closing quote: whatever follows (`)]`) is not ours.
        let (value, _) = value.trim_start().strip_prefix('"')?.split_once('"')?;
        Some(value.to_owned())
    }

    /// The flags `server/src/config.rs` declares, from each `#[arg(..)]` and
    /// the field under it: clap's bare `long` means the field name with
    /// dashes, `long = "x"` means `--x`.
    fn server_flags() -> Vec<Flag> {
        let config = read("server/src/config.rs");
        let mut flags = Vec::new();
        for chunk in config.split("#[arg(").skip(1) {
            let (attr, rest) = chunk.split_once(")]").expect("an #[arg( without )]");
            let field = rest
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("#[") && !l.starts_with("//"))
                .and_then(|l| l.split_once(':'))
                .map(|(name, _)| {
                    name.trim_start_matches("pub(crate) ")
                        .trim_start_matches("pub ")
                        .trim()
                        .to_owned()
                })
                .expect("an #[arg] with no field under it");
            let (mut long, mut env) = (None, None);
            for part in attr.split(',').map(str::trim) {
                if part == "long" {
                    long = Some(field.replace('_', "-"));
                } else if let Some(v) = quoted(part, "long") {
                    long = Some(v);
                } else if let Some(v) = quoted(part, "env") {
                    env = Some(v);
                }
            }
            // The contract gives every flag a variable; a flag without one
            // is a bug in config.rs, not something to document around.
            let long = long.unwrap_or_else(|| panic!("field `{field}` has no `long` name"));
            let env = env.unwrap_or_else(|| panic!("--{long} has no `env` variable"));
            flags.push(Flag {
                long: format!("--{long}"),
                env,
            });
        }
        flags
    }

    /// The body of `enum name { .. }` in `src`, line comments removed, and
    /// the attribute lines right above it.
    fn enum_source(src: &str, name: &str) -> (String, String) {
        let lines: Vec<&str> = src.lines().collect();
        let decl = format!("pub enum {name} {{");
        let at = lines
            .iter()
            .position(|l| l.trim() == decl)
            .unwrap_or_else(|| panic!("no `{decl}`"));
        let attrs: Vec<&str> = lines[..at]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .collect();
        // Doc comments may hold braces or commas (`{"userId":2}`); drop them
        // before counting depth.
        let mut body = String::new();
        let mut depth = 1;
        'lines: for line in &lines[at + 1..] {
            let code = line.split("//").next().unwrap_or("");
            for c in code.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break 'lines;
                }
                body.push(c);
            }
            body.push('\n');
        }
        (body, attrs.join("\n"))
    }

    /// The strings serde writes for the variants of `enum name`: a variant's
    /// own `rename`, or its name under the enum's `rename_all`.
    fn serde_variant_names(src: &str, name: &str) -> Vec<String> {
        let (body, attrs) = enum_source(src, name);
        let rename_all = attrs
            .split(',')
            .find_map(|part| quoted(part.trim().trim_start_matches("#[serde("), "rename_all"));
        // Variants are the parts of the body between commas at depth 0.
        let mut parts = vec![String::new()];
        let mut depth = 0;
        for c in body.chars() {
            match c {
                '{' | '(' | '[' => depth += 1,
                '}' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            parts.last_mut().unwrap().push(c);
        }
        let mut names = Vec::new();
        for part in parts {
            let mut rest = part.trim();
            let mut renamed = None;
            // Variant attributes come before the name; field attributes
            // come after it and are not looked at.
            while let Some(attr) = rest.strip_prefix("#[") {
                let (inside, after) = attr.split_once(']').expect("unclosed attribute");
                if let Some(args) = inside.strip_prefix("serde(") {
                    renamed = args
                        .trim_end_matches(')')
                        .split(',')
                        .find_map(|p| quoted(p.trim(), "rename"));
                }
                rest = after.trim_start();
            }
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.is_empty() {
                continue;
            }
            names.push(renamed.unwrap_or_else(|| match rename_all.as_deref() {
                None => ident.clone(),
                Some("lowercase") => ident.to_lowercase(),
                Some("snake_case") => {
                    let mut out = String::new();
                    for (i, c) in ident.chars().enumerate() {
                        if c.is_ascii_uppercase() && i > 0 {
                            out.push('_');
                        }
                        out.push(c.to_ascii_lowercase());
                    }
                    out
                }
                Some(other) => panic!("teach tidy.rs serde's rename_all = {other:?}"),
            }));
        }
        names
    }

    /// String literals that open a line and are followed by `=> prefix`:
    /// the arms of a hand-written `match` on wire strings.
    fn match_arm_strings(src: &str, prefix: &str) -> Vec<String> {
        src.lines()
            .filter_map(|l| {
                let rest = l.trim().strip_prefix('"')?;
                let (s, after) = rest.split_once('"')?;
                after
                    .trim_start()
                    .strip_prefix("=>")?
                    .trim_start()
                    .starts_with(prefix)
                    .then(|| s.to_owned())
            })
            .collect()
    }

    #[test]
    fn readme_and_protocol_guide_document_every_server_flag() {
        let flags = server_flags();
        // Eleven flags once, more since: a parse that finds fewer
        // has stopped understanding config.rs, and would check nothing.
        assert!(
            flags.len() > 10,
            "found only {} flags: {flags:?}",
            flags.len()
        );
        for (doc, text) in [
            ("README.md", read("README.md")),
            ("docs/protocol.md", read("docs/protocol.md")),
        ] {
            for f in &flags {
                assert!(
                    mentions(&text, &f.long),
                    "{doc} does not mention {}",
                    f.long
                );
                assert!(
                    mentions(&text, &f.env),
                    "{doc} does not mention {} ({})",
                    f.env,
                    f.long
                );
            }
        }
    }

    #[test]
    fn protocol_guide_shows_every_frame_type() {
        let client_src = read("protocol/src/client_frame.rs");
        let server_src = read("protocol/src/server_frame.rs");
        // The client parser is hand-written, so the strings it accepts are
        // read from its match arms as well as from the serde enum.
        let mut client = serde_variant_names(&client_src, "ClientFrame");
        client.extend(match_arm_strings(&client_src, "ClientFrame::"));
        client.sort();
        client.dedup();
        let server = serde_variant_names(&server_src, "ServerFrame");
        // Five each way in v1: fewer means the parse lost its way.
        assert!(client.len() >= 5, "too few client frame types: {client:?}");
        assert!(server.len() >= 5, "too few server frame types: {server:?}");
        let guide = read("docs/protocol.md");
        for t in client.iter().chain(&server) {
            // An example frame, not just the word: "send" is in any text.
            let example = format!("\"type\":\"{t}\"");
            assert!(
                guide.contains(&example),
                "docs/protocol.md has no example with {example}"
            );
        }
    }

    #[test]
    fn protocol_guide_names_every_error_code() {
        let src = read("protocol/src/error.rs");
        let mut codes = serde_variant_names(&src, "ErrorCode");
        // `as_str` spells each code out too; both spellings must be documented.
        codes.extend(src.lines().filter_map(|l| {
            let (_, code) = l.trim().strip_prefix("ErrorCode::")?.split_once("=> \"")?;
            Some(code.trim_end_matches(['"', ',']).to_owned())
        }));
        codes.sort();
        codes.dedup();
        assert!(codes.len() >= 11, "too few error codes: {codes:?}");
        let guide = read("docs/protocol.md");
        for c in codes {
            assert!(
                guide.contains(&format!("`{c}`")),
                "docs/protocol.md does not name `{c}`"
            );
        }
    }
}
