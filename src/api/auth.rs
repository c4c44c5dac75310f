//! The API's bearer token: loaded from the environment or a private file, compared in constant
//! time, and never printed (its `Debug` is redacted).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use super::config::ApiConfig;

/// A bearer token; its text never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A token from text (surrounding whitespace removed); `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Self(t.to_string()))
    }

    /// True when an `Authorization` header value carries this token.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let want = self.0.as_bytes();
        // Constant time in the token's content: no early exit on the first differing byte.
        let mut diff = (given.len() ^ want.len()) as u8 | u8::from(given.len() != want.len());
        for (i, &w) in want.iter().enumerate() {
            diff |= w ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// Why the API refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Non-loopback bind without a token.
    #[error(
        "api.bind {bind} is not a loopback address: set a token in the environment variable {env} or in api.token_file (mode 0600), or bind to 127.0.0.1"
    )]
    TokenRequired {
        /// The bind address.
        bind: SocketAddr,
        /// The environment variable that was checked.
        env: String,
    },
    /// The token file could not be read.
    #[error("api.token_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token file is readable by others.
    #[error("api.token_file {path}: mode {mode:o} lets other users read it; expected 0600")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file is empty.
    #[error("api.token_file {path}: empty; expected the token on one line")]
    Empty {
        /// The file.
        path: String,
    },
}

/// The token from `cfg.token_env` (via `env`), else from `cfg.token_file`.
pub fn load_token(
    cfg: &ApiConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ApiToken>, AuthError> {
    if let Some(t) = env(&cfg.token_env).as_deref().and_then(ApiToken::new) {
        return Ok(Some(t));
    }
    if cfg.token_file.as_os_str().is_empty() {
        return Ok(None);
    }
    read_token_file(&cfg.token_file).map(Some)
}

fn read_token_file(path: &Path) -> Result<ApiToken, AuthError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| AuthError::Read {
        path: shown.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Permissions { path: shown, mode });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: shown.clone(),
        source,
    })?;
    ApiToken::new(&text).ok_or(AuthError::Empty { path: shown })
}

/// Refuses a non-loopback bind without a token.
pub fn check_bind(
    bind: SocketAddr,
    token: Option<&ApiToken>,
    env_name: &str,
) -> Result<(), AuthError> {
    if bind.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(AuthError::TokenRequired {
            bind,
            env: env_name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_comparison_and_redaction() {
        let t = ApiToken::new(" s3cret\n").unwrap();
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Bearer s3cret!")));
        assert!(!t.accepts(Some(b"s3cret")));
        assert!(!t.accepts(None));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(ApiToken::new("  ").is_none());
    }

    #[test]
    fn token_from_env_then_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut cfg = ApiConfig {
            token_file: file.clone(),
            ..ApiConfig::default()
        };
        let env_tok = load_token(&cfg, |_| Some("from-env".into())).unwrap();
        assert_eq!(env_tok, ApiToken::new("from-env"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_token(&cfg, |_| None).unwrap_err().to_string();
            assert!(e.contains("0600") && e.contains("644"), "{e}");
            assert!(!e.contains("from-file"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            load_token(&cfg, |_| None).unwrap(),
            ApiToken::new("from-file")
        );
        cfg.token_file = std::path::PathBuf::new();
        assert_eq!(load_token(&cfg, |_| None).unwrap(), None);
    }

    #[test]
    fn only_loopback_runs_without_a_token() {
        let tok = ApiToken::new("x");
        assert!(check_bind("127.0.0.1:1".parse().unwrap(), None, "E").is_ok());
        assert!(check_bind("[::1]:1".parse().unwrap(), None, "E").is_ok());
        let e = check_bind("0.0.0.0:1".parse().unwrap(), None, "E").unwrap_err();
        assert!(e.to_string().contains("not a loopback"), "{e}");
        assert!(check_bind("0.0.0.0:1".parse().unwrap(), tok.as_ref(), "E").is_ok());
    }
}
