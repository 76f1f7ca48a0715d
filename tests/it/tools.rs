//! The Go programs `scripts/build-tools` builds from the Go module proxy (Prometheus 3.16,
//! Alertmanager 0.35, Sloth 0.16), found in its cache: `$BURNWATCH_TOOLS/<name>-<version>/`,
//! else `${XDG_CACHE_HOME:-$HOME/.cache}/burnwatch/tools/<name>-<version>/`. `./scripts/test`
//! builds what is missing before the tests run; a test that needs a program that is not there
//! fails saying how to build it (it never skips).

use std::path::PathBuf;

/// The cache folder of `name` at `version`; panics, naming the command that builds it, when
/// it is not there.
pub fn dir(name: &str, version: &str) -> PathBuf {
    let root = match std::env::var_os("BURNWATCH_TOOLS") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .expect("HOME or XDG_CACHE_HOME is set");
            cache.join("burnwatch").join("tools")
        }
    };
    let dir = root.join(format!("{name}-{version}"));
    assert!(
        dir.is_dir(),
        "{name} {version} is not built in {}: run ./scripts/test (or scripts/build-tools), which \
         builds it from the Go module proxy",
        dir.display()
    );
    dir
}
