//! What the fuzz targets share: the oracle's view of serde_json's limits.
//! The targets (`fuzz_targets/*.rs`) are the crate's binaries and use this
//! library as `wshub_fuzz`.

/// serde_json's reading of some bytes, the oracle the parsers are checked
/// against.
pub type Oracle = Result<serde_json::Value, serde_json::Error>;

/// Whether serde_json refused `e` only because of its own limits (nesting, a
/// number beyond f64, a lone surrogate escape), for text that is JSON by the
/// grammar, which the parsers rightly take (keeping such a `body` raw).
pub fn beyond_serde_limits(e: &serde_json::Error) -> bool {
    let e = e.to_string();
    [
        "recursion limit",
        "number out of range",
        // `\udddd`: an escape of half a surrogate pair is JSON by the
        // grammar (RFC 8259 §8.2), but not a Rust string.
        "surrogate",
        "hex escape",
        "invalid unicode code point",
    ]
    .iter()
    .any(|limit| e.contains(limit))
}

/// Whether the oracle refused the input only past its own limits
/// ([`beyond_serde_limits`]), so that it has no say on it.
pub fn too_deep(value: &Oracle) -> bool {
    matches!(value, Err(e) if beyond_serde_limits(e))
}
