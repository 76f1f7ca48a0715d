//! TLS to PostgreSQL with libpq's `sslmode` meanings, by rustls.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and no `sslrootcert`;
//! libpq's users write `verify-ca` and `verify-full` with a root certificate file. So the two
//! options are taken out of the URL (or key=value string) here, and the connection is made as
//! libpq makes it:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | not checked (as libpq: encryption only) |
//! | `require` | always | not checked; with `sslrootcert`, checked as `verify-ca` (as libpq) |
//! | `verify-ca` | always | signed by `sslrootcert` (else the platform's roots) |
//! | `verify-full` | always | `verify-ca`, and names the host connected to |
//!
//! `sslrootcert=system` (as libpq 16) means the platform's roots, with `verify-full` (the
//! default then; a weaker mode is refused).
//!
//! Unchecked certificates still prove the handshake's signatures: the connection is encrypted,
//! only the server's identity is taken on trust (libpq's `prefer`/`require` do the same).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;

use super::HaError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        Some(match text {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => return None,
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS options of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// `sslrootcert`: a PEM file of the certificates the server's must chain to.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query or a key=value
/// connection string; returns the rest, for tokio-postgres, and the TLS settings. Errors never
/// repeat the string (it holds the password).
pub fn split(url: &str) -> Result<(String, Settings), HaError> {
    let url = url.trim();
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool, HaError> {
        match key {
            "sslmode" => {
                mode = Some(Mode::parse(&value).ok_or(HaError::BadUrl)?);
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The query starts after the user info (a password may hold a `?`, as libpq reads it).
        let host_from = url.rfind('@').map_or(0, |at| at + 1);
        match url[host_from..]
            .find('?')
            .map(|at| (&url[..host_from + at], &url[host_from + at + 1..]))
        {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value).ok_or(HaError::BadUrl)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, text) in key_values(url).ok_or(HaError::BadUrl)? {
            if !take(&key, value)? {
                kept.push(text);
            }
        }
        kept.join(" ")
    };
    let settings = if root_cert.as_deref() == Some(std::path::Path::new("system")) {
        match mode.unwrap_or(Mode::VerifyFull) {
            Mode::VerifyFull => Settings {
                mode: Mode::VerifyFull,
                root_cert: None,
            },
            weaker => {
                return Err(HaError::Tls(format!(
                    "sslmode {weaker:?} is too weak for sslrootcert=system (use verify-full)"
                )));
            }
        }
    } else {
        Settings {
            mode: mode.unwrap_or(Mode::Prefer),
            root_cert,
        }
    };
    Ok((rest, settings))
}

/// `%XX` escapes decoded (None: a broken escape, or not UTF-8).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `key=value` pairs of a libpq connection string (values optionally single-quoted, `\`
/// escaping within), each with its original text.
fn key_values(text: &str) -> Option<Vec<(String, String, &str)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let equals = rest.find('=')?;
        let key = rest[..equals].trim().to_string();
        rest = rest[equals + 1..].trim_start();
        let mut value = String::new();
        let mut chars = rest.char_indices().peekable();
        let end = if rest.starts_with('\'') {
            chars.next();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '\'' => {
                        end = Some(at + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            end?
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            end
        };
        let consumed = start.len() - rest.len() + end;
        pairs.push((key, value, &start[..consumed]));
        rest = rest[end..].trim_start();
    }
    Some(pairs)
}

/// The rustls client config for `settings` (None for `disable`).
pub fn client_config(settings: &Settings) -> Result<Option<ClientConfig>, HaError> {
    crate::source::prometheus::install_crypto_provider();
    let check = match (settings.mode, &settings.root_cert) {
        (Mode::Disable, _) => return Ok(None),
        (Mode::Prefer, _) | (Mode::Require, None) => Check::Nothing,
        (Mode::Require | Mode::VerifyCa, _) => Check::Chain,
        (Mode::VerifyFull, _) => Check::ChainAndName,
    };
    let builder = ClientConfig::builder();
    let config = match check {
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
        Check::Chain | Check::ChainAndName => {
            let roots = roots(settings.root_cert.as_ref())?;
            let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|error| HaError::Tls(format!("cannot check certificates: {error}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Chain {
                    webpki,
                    name_too: check == Check::ChainAndName,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// `sslrootcert`'s certificates, else the platform's roots.
fn roots(file: Option<&PathBuf>) -> Result<RootCertStore, HaError> {
    let mut roots = RootCertStore::empty();
    match file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| {
                HaError::Tls(format!(
                    "cannot read sslrootcert {}: {error}",
                    path.display()
                ))
            })?;
            let mut found = 0;
            for certificate in rustls_pemfile_certs(&pem) {
                roots.add(certificate).map_err(|error| {
                    HaError::Tls(format!("sslrootcert {}: {error}", path.display()))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(HaError::Tls(format!(
                    "sslrootcert {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// `prefer` and `require` without a root: the handshake's signatures are checked, the
/// certificate is not.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (the chain only) and `verify-full` (the chain and the host's name).
#[derive(Debug)]
struct Chain {
    webpki: Arc<WebPkiServerVerifier>,
    name_too: bool,
}

impl ServerCertVerifier for Chain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name_too => Ok(ServerCertVerified::assertion()),
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, settings) = split(
            "postgres://bw:s3cret@db:5432/bw?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://bw:s3cret@db:5432/bw?application_name=x");
        assert_eq!(
            settings,
            Settings {
                mode: Mode::VerifyFull,
                root_cert: Some(PathBuf::from("/etc/ca.pem")),
            }
        );
        // A `?` in the password is not the query's.
        let (rest, settings) = split("postgres://bw:pa?ss@db/bw?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), settings.mode),
            ("postgres://bw:pa?ss@db/bw", Mode::Require)
        );
        let (rest, settings) = split("postgres://bw@db/bw?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), settings.mode),
            ("postgres://bw@db/bw", Mode::Require)
        );
        let (rest, settings) = split("postgres://bw@db/bw").unwrap();
        assert_eq!(
            (rest.as_str(), settings.mode),
            ("postgres://bw@db/bw", Mode::Prefer)
        );
        let (rest, settings) = split(
            "host=db user=bw password='it\\'s quoted' sslmode=verify-ca sslrootcert='/etc/my ca.pem'",
        )
        .unwrap();
        assert_eq!(rest, "host=db user=bw password='it\\'s quoted'");
        assert_eq!(settings.mode, Mode::VerifyCa);
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        assert!(matches!(
            split("postgres://bw:s3cret@db/bw?sslmode=sometimes"),
            Err(HaError::BadUrl)
        ));
        // libpq 16's sslrootcert=system: the platform's roots, verify-full.
        let (_, settings) = split("postgres://bw@db/bw?sslrootcert=system").unwrap();
        assert_eq!(
            settings,
            Settings {
                mode: Mode::VerifyFull,
                root_cert: None,
            }
        );
        let weak = split("postgres://bw:s3cret@db/bw?sslrootcert=system&sslmode=require");
        let message = weak.expect_err("refused").to_string();
        assert!(
            message.contains("too weak") && !message.contains("s3cret"),
            "{message}"
        );
    }
}
