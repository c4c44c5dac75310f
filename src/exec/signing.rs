//! Request signing and API credentials.
//!
//! Binance and MEXC sign `hex(HMAC-SHA256(secret, query ++ body))`; the signed text must be
//! byte-identical to what is sent, so requests are built once as a [`Query`] and both signed and
//! sent from that string. Secrets live in [`Secret`], whose `Debug`/`Display` print `***`, so a
//! secret cannot reach a log line, the screen or an error message by formatting.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A secret string that never formats its content.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for computing signatures.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An API key and its signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Public API key sent in the key header (an identifier, but still not printed whole).
    pub api_key: String,
    /// HMAC secret.
    pub secret: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.api_key.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("api_key", &format_args!("{shown}…"))
            .field("secret", &self.secret)
            .finish()
    }
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// Neither the environment nor a file provided them.
    #[error("no credentials: set {key_var} and {secret_var}, or give a credentials file")]
    Missing {
        /// Environment variable for the key.
        key_var: String,
        /// Environment variable for the secret.
        secret_var: String,
    },
    /// One of the two environment variables is set, the other is not (or is empty).
    #[error("{missing} is not set (or empty) while {present} is")]
    Partial {
        /// The variable that is set.
        present: String,
        /// The variable that is missing.
        missing: String,
    },
    /// The file is readable by group or others.
    #[error(
        "credentials file {path} has mode {mode:o}; it must be 600 (run: chmod 600 {path})",
        path = path.display()
    )]
    Permissions {
        /// File path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read.
    #[error("cannot read credentials file {path}: {reason}", path = path.display())]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error text (never the content).
        reason: String,
    },
    /// The file is not `api_key = "..."` / `secret = "..."` TOML.
    #[error(
        "credentials file {path}: expected TOML with string keys `api_key` and `secret`",
        path = path.display()
    )]
    Format {
        /// File path.
        path: PathBuf,
    },
}

impl Credentials {
    /// Key and secret from `{prefix}_API_KEY` / `{prefix}_API_SECRET`
    /// (e.g. prefix `MMTRADER_BINANCE`).
    pub fn from_env(prefix: &str) -> Result<Self, CredentialError> {
        Self::from_lookup(prefix, |k| std::env::var(k).ok())
    }

    /// Same as [`Credentials::from_env`] over any variable source (testable without `set_var`).
    pub fn from_lookup(
        prefix: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialError> {
        let key_var = format!("{prefix}_API_KEY");
        let secret_var = format!("{prefix}_API_SECRET");
        let key = get(&key_var).filter(|v| !v.is_empty());
        let secret = get(&secret_var).filter(|v| !v.is_empty());
        match (key, secret) {
            (Some(api_key), Some(secret)) => Ok(Self {
                api_key,
                secret: Secret::new(secret),
            }),
            (None, None) => Err(CredentialError::Missing {
                key_var,
                secret_var,
            }),
            (Some(_), None) => Err(CredentialError::Partial {
                present: key_var,
                missing: secret_var,
            }),
            (None, Some(_)) => Err(CredentialError::Partial {
                present: secret_var,
                missing: key_var,
            }),
        }
    }

    /// Reads a TOML file `api_key = "..."`, `secret = "..."` that must have mode 0600 (or
    /// stricter): a secret readable by other users is refused, not used.
    pub fn from_file(path: &Path) -> Result<Self, CredentialError> {
        let meta = std::fs::metadata(path).map_err(|e| CredentialError::Read {
            path: path.to_owned(),
            reason: e.kind().to_string(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CredentialError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Read {
            path: path.to_owned(),
            reason: e.kind().to_string(),
        })?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            api_key: String,
            secret: String,
        }
        // The parser's own error could quote the file's content: report only the expected form.
        let f: File = toml::from_str(&text).map_err(|_| CredentialError::Format {
            path: path.to_owned(),
        })?;
        if f.api_key.is_empty() || f.secret.is_empty() {
            return Err(CredentialError::Format {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            api_key: f.api_key,
            secret: Secret::new(f.secret),
        })
    }

    /// The environment first, then `file` when given.
    pub fn load(prefix: &str, file: Option<&Path>) -> Result<Self, CredentialError> {
        match Self::from_env(prefix) {
            Ok(c) => Ok(c),
            Err(CredentialError::Missing { .. }) if file.is_some() => {
                Self::from_file(file.unwrap_or(Path::new("")))
            }
            Err(e) => Err(e),
        }
    }
}

/// Lowercase hex of `HMAC-SHA256(secret, payload)`.
pub fn sign(secret: &Secret, payload: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(payload.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// Lowercase hex of a byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Constant-time comparison of two hex signatures, case-insensitive (Binance accepts both cases).
pub fn signatures_match(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    }) == 0
}

/// Percent-encodes a parameter value (RFC 3986 unreserved characters pass through).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
        }
    }
    out
}

/// An ordered, already-encoded query string: what is signed is exactly what is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(String);

impl Query {
    /// An empty query.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `name=value` (value percent-encoded).
    pub fn push(&mut self, name: &str, value: impl AsRef<str>) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(&encode_component(value.as_ref()));
        self
    }

    /// Builder form of [`Query::push`].
    pub fn with(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.push(name, value);
        self
    }

    /// The encoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with `&signature=<hex>` appended, signed over everything before it.
    pub fn signed(&self, secret: &Secret) -> String {
        let sig = sign(secret, &self.0);
        if self.0.is_empty() {
            format!("signature={sig}")
        } else {
            format!("{}&signature={sig}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_documented_vector() {
        let secret =
            Secret::new("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j");
        let q = Query::new()
            .with("symbol", "LTCBTC")
            .with("side", "BUY")
            .with("type", "LIMIT")
            .with("timeInForce", "GTC")
            .with("quantity", "1")
            .with("price", "0.1")
            .with("recvWindow", "5000")
            .with("timestamp", "1499827319559");
        assert_eq!(
            sign(&secret, q.as_str()),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
        assert!(q.signed(&secret).ends_with(
            "&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        ));
    }

    #[test]
    fn binance_non_ascii_vector_is_signed_percent_encoded() {
        let secret =
            Secret::new("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j");
        let q = Query::new()
            .with("symbol", "１２３４５６")
            .with("side", "BUY")
            .with("type", "LIMIT")
            .with("timeInForce", "GTC")
            .with("quantity", "1")
            .with("price", "0.1")
            .with("recvWindow", "5000")
            .with("timestamp", "1499827319559");
        assert!(
            q.as_str()
                .starts_with("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&")
        );
        assert_eq!(
            sign(&secret, q.as_str()),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
    }

    #[test]
    fn mexc_documented_vectors() {
        let secret = Secret::new("45d0b3c26f2644f19bfb98b07741b2f5");
        assert_eq!(
            sign(
                &secret,
                "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000&timestamp=1644489390087"
            ),
            "fd3e4e8543c5188531eb7279d68ae7d26a573d0fc5ab0d18eb692451654d837a"
        );
        assert_eq!(
            sign(
                &secret,
                "symbol=BTCUSDT&side=BUY&type=LIMITquantity=1&price=11&recvWindow=5000&timestamp=1644489390087"
            ),
            "d1a676610ceb39174c8039b3f548357994b2a34139a8addd33baadba65684592"
        );
    }

    #[test]
    fn secrets_never_format() {
        let c = Credentials {
            api_key: "abcdefgh".into(),
            secret: Secret::new("topsecretvalue"),
        };
        let shown = format!("{c:?} {} {:?}", c.secret, c.secret);
        assert!(!shown.contains("topsecretvalue"));
        assert!(!shown.contains("abcdefgh"));
        assert!(shown.contains("***"));
    }

    #[test]
    fn env_lookup_reports_what_is_missing() {
        let none = Credentials::from_lookup("X", |_| None);
        assert!(matches!(none, Err(CredentialError::Missing { .. })));
        let half = Credentials::from_lookup("X", |k| (k == "X_API_KEY").then(|| "k".to_string()));
        assert_eq!(
            half,
            Err(CredentialError::Partial {
                present: "X_API_KEY".into(),
                missing: "X_API_SECRET".into()
            })
        );
        let full = Credentials::from_lookup("X", |k| Some(format!("v-{k}"))).unwrap();
        assert_eq!(full.api_key, "v-X_API_KEY");
        assert_eq!(full.secret.expose(), "v-X_API_SECRET");
    }

    #[cfg(unix)]
    #[test]
    fn credentials_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds.toml");
        std::fs::write(&p, "api_key = \"key1\"\nsecret = \"sekrit-value\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::from_file(&p).unwrap_err();
        assert!(matches!(
            e,
            CredentialError::Permissions { mode: 0o644, .. }
        ));
        assert!(e.to_string().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::from_file(&p).unwrap();
        assert_eq!(c.api_key, "key1");
        assert_eq!(c.secret.expose(), "sekrit-value");
        std::fs::write(&p, "api_key = \"key1\"\nsecret = 5\n# sekrit-value\n").unwrap();
        let e = Credentials::from_file(&p).unwrap_err();
        assert!(!format!("{e:?} {e}").contains("sekrit-value"));
    }

    #[test]
    fn signature_comparison_ignores_case_only() {
        assert!(signatures_match("abcDEF01", "ABCdef01"));
        assert!(!signatures_match("abcdef01", "abcdef02"));
        assert!(!signatures_match("abc", "abcd"));
    }
}
