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

/// Checks, once per binary, that the first line `binary --version` prints (on stdout or
/// stderr) says `version <expected>`; panics naming the binary, what it said and how to get
/// the right one (`hint`).
pub fn check_version(binary: &std::path::Path, expected: &str, hint: &str) {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    static CHECKED: OnceLock<Mutex<BTreeMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let mut checked = CHECKED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let result = checked
        .entry(binary.to_path_buf())
        .or_insert_with(|| {
            let out = std::process::Command::new(binary)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}; {hint}", binary.display()))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let first = text.lines().next().unwrap_or("");
            if first.contains(&format!("version {expected}")) {
                Ok(())
            } else {
                Err(format!(
                    "{} is not version {expected}x: {first:?}; {hint}",
                    binary.display()
                ))
            }
        })
        .clone();
    if let Err(e) = result {
        panic!("{e}");
    }
}
