//! Which Prometheus a source is, and so whose window arithmetic burnwatch follows for it.
//!
//! Prometheus 3.0 made range selectors left-open and 2.51 reordered the extrapolation's
//! zero-point clamp ([`Semantics`]); the same samples give other window values under each. A
//! source's version comes from `/api/v1/status/buildinfo`; a server that reports no usable
//! Prometheus version (a build without version stamps, Thanos, Mimir) is taken as current
//! Prometheus when it serves `/api/v1/features` (3.x only) and assumed current otherwise, and
//! says so. `prometheus.semantics` in the config pins it whatever the server says.

use serde::Serialize;

use crate::window::Semantics;

/// How the semantics in force were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// `prometheus.semantics` in the config.
    Pinned,
    /// From the version the server reported (or its 3.x-only features endpoint).
    Detected,
    /// Not known (no answer yet, or a server that does not say): current Prometheus.
    Assumed,
}

/// What the daemon knows of its source's version, as `/api/v1/status` and the status page
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceVersion {
    /// The application when it is not Prometheus (`Grafana Mimir`), as buildinfo names it.
    pub application: Option<String>,
    /// The version as buildinfo reported it; `None` before any answer.
    pub version: Option<String>,
    pub semantics: Semantics,
    pub basis: Basis,
    /// Why, in words: what was reported and what follows.
    pub reason: String,
}

impl SourceVersion {
    /// Before the server answered: pinned, or assumed current.
    pub fn unknown(pinned: Option<Semantics>) -> SourceVersion {
        match pinned {
            Some(semantics) => SourceVersion {
                application: None,
                version: None,
                semantics,
                basis: Basis::Pinned,
                reason: format!("pinned by prometheus.semantics: {}", semantics.describe()),
            },
            None => SourceVersion {
                application: None,
                version: None,
                semantics: Semantics::CURRENT,
                basis: Basis::Assumed,
                reason: "the server has not reported its version yet; current Prometheus assumed"
                    .to_string(),
            },
        }
    }
}

/// `/api/v1/status/buildinfo`'s essentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// Set by servers that are not Prometheus (Mimir: `Grafana Mimir`).
    pub application: Option<String>,
}

/// The semantics to follow given what the server said: its build info, and whether it serves
/// `/api/v1/features` (Prometheus 3.x does; `None` when not asked).
pub fn judge(
    pinned: Option<Semantics>,
    build: &BuildInfo,
    features: Option<bool>,
) -> SourceVersion {
    let application = build
        .application
        .clone()
        .filter(|name| !name.eq_ignore_ascii_case("prometheus") && !name.is_empty());
    let version = Some(build.version.clone());
    let reported = match &application {
        Some(name) => format!("{name} {}", build.version),
        None => format!("Prometheus {:?}", build.version),
    };
    if let Some(semantics) = pinned {
        return SourceVersion {
            application,
            version,
            semantics,
            basis: Basis::Pinned,
            reason: format!(
                "the server reports {reported}; pinned by prometheus.semantics: {}",
                semantics.describe()
            ),
        };
    }
    let parsed = match application {
        None => Semantics::of_version(&build.version).ok(),
        Some(_) => None,
    };
    let (semantics, basis, reason) = match (parsed, features) {
        (Some(semantics), _) => (
            semantics,
            Basis::Detected,
            format!("the server reports {reported}: {}", semantics.describe()),
        ),
        (None, Some(true)) => (
            Semantics::Prometheus3,
            Basis::Detected,
            format!(
                "the server reports {reported} and serves /api/v1/features, which Prometheus 3 \
                 added: {}",
                Semantics::Prometheus3.describe()
            ),
        ),
        (None, _) => (
            Semantics::CURRENT,
            Basis::Assumed,
            format!(
                "the server reports {reported}, which does not say which Prometheus's window \
                 arithmetic it follows; current Prometheus assumed (set prometheus.semantics \
                 to pin it): {}",
                Semantics::CURRENT.describe()
            ),
        ),
    };
    SourceVersion {
        application,
        version,
        semantics,
        basis,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(version: &str, application: Option<&str>) -> BuildInfo {
        BuildInfo {
            version: version.to_string(),
            application: application.map(str::to_string),
        }
    }

    #[test]
    fn a_prometheus_version_decides() {
        let judged = judge(None, &build("2.42.0", None), None);
        assert_eq!(
            (judged.semantics, judged.basis),
            (Semantics::Prometheus2, Basis::Detected)
        );
        let judged = judge(None, &build("3.16.0", Some("Prometheus")), Some(false));
        assert_eq!(
            (judged.semantics, judged.basis),
            (Semantics::Prometheus3, Basis::Detected)
        );
        assert!(judged.reason.contains("3.16.0"), "{}", judged.reason);
    }

    #[test]
    fn another_application_or_no_version_is_not_read_as_prometheus() {
        // Mimir 2.14 is not Prometheus 2.x.
        let judged = judge(None, &build("2.14.0", Some("Grafana Mimir")), Some(false));
        assert_eq!(
            (judged.semantics, judged.basis),
            (Semantics::Prometheus3, Basis::Assumed)
        );
        assert!(
            judged.reason.contains("Grafana Mimir 2.14.0"),
            "{}",
            judged.reason
        );
        // A build without version stamps that serves the 3.x features endpoint.
        let judged = judge(None, &build("", None), Some(true));
        assert_eq!(
            (judged.semantics, judged.basis),
            (Semantics::Prometheus3, Basis::Detected)
        );
    }

    #[test]
    fn pinned_wins() {
        let judged = judge(
            Some(Semantics::Prometheus2_51),
            &build("3.16.0", None),
            None,
        );
        assert_eq!(
            (judged.semantics, judged.basis),
            (Semantics::Prometheus2_51, Basis::Pinned)
        );
        assert_eq!(
            SourceVersion::unknown(None).semantics,
            Semantics::Prometheus3
        );
    }
}
