//! Access control: bearer tokens configured by the admin, each with a scope. An admin token
//! (scope `*`) reads everything; a scoped token reads only below the path prefixes it was
//! given, in every endpoint; snapshot-wide reports (usage, histograms, growth per owner) need
//! an admin token. Without tokens configured the API serves everyone, and only on loopback.
//!
//! The configuration (a file, or the same text in an environment variable), one token a line:
//!
//! ```text
//! # name    token                              scope
//! admin     3f9c0d6e2b7a41c8a5e0f1d2c3b4a596    *
//! alice     9b8a7c6d5e4f30211a2b3c4d5e6f7081    /lustre/projects/alice /lustre/scratch/alice
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// Shortest token accepted: guessing one must be hopeless.
pub const MIN_TOKEN_CHARS: usize = 24;

/// What a request may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Absolute directories; everything at or below them.
    Prefixes(Vec<Vec<u8>>),
}

impl Scope {
    /// Whether `path` is readable.
    pub fn allows(&self, path: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Prefixes(prefixes) => prefixes.iter().any(|p| {
                p.as_slice() == b"/"
                    || path == p.as_slice()
                    || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
            }),
        }
    }

    /// `path` if readable, else the 403 that says what is.
    pub fn check(&self, path: &[u8]) -> Result<(), ApiError> {
        if self.allows(path) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this token may read only below {}; {:?} is outside (give path= within it)",
            self.describe(),
            String::from_utf8_lossy(path)
        )))
    }

    /// Snapshot-wide reports need everything.
    pub fn check_all(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Self::All => Ok(()),
            Self::Prefixes(_) => Err(ApiError::Forbidden(format!(
                "{what} covers the whole snapshot; it needs an admin token (this one may read only below {})",
                self.describe()
            ))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::All => "/".into(),
            Self::Prefixes(p) => p
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[derive(Debug, Clone)]
struct Grant {
    name: String,
    token: String,
    scope: Scope,
}

/// The configured tokens; empty means open (loopback only).
#[derive(Debug, Clone, Default)]
pub struct Access {
    grants: Vec<Grant>,
}

#[derive(Debug, thiserror::Error)]
#[error("token configuration, line {line}: {problem}")]
pub struct ConfigError {
    line: usize,
    problem: String,
}

impl Access {
    /// Everyone reads everything.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// Parses the configuration text (see the module docs).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut grants = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |problem: String| ConfigError {
                line: i + 1,
                problem,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(token)) = (words.next(), words.next()) else {
                return Err(err("expected: NAME TOKEN SCOPE...".into()));
            };
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(err(format!(
                    "the token of {name} is shorter than {MIN_TOKEN_CHARS} characters; make one with `openssl rand -hex 24`"
                )));
            }
            let scopes: Vec<&str> = words.collect();
            let scope = match scopes.as_slice() {
                [] => return Err(err(format!("{name} has no scope: give * or path prefixes"))),
                ["*"] => Scope::All,
                prefixes => {
                    let mut out = Vec::new();
                    for p in prefixes {
                        let valid = p.starts_with('/')
                            && (p.len() == 1 || !p.ends_with('/'))
                            && !p[1..]
                                .split('/')
                                .any(|c| c.is_empty() || c == "." || c == "..");
                        if !valid || *p == "*" {
                            return Err(err(format!(
                                "{p:?} is not an absolute directory without a trailing '/' (or * alone)"
                            )));
                        }
                        out.push(p.as_bytes().to_vec());
                    }
                    Scope::Prefixes(out)
                }
            };
            if grants.iter().any(|g: &Grant| g.token == token) {
                return Err(err(format!("the token of {name} is given twice")));
            }
            grants.push(Grant {
                name: name.to_owned(),
                token: token.to_owned(),
                scope,
            });
        }
        Ok(Self { grants })
    }

    /// The grant of a presented token, compared in time independent of where it differs.
    fn grant(&self, presented: &str) -> Option<&Grant> {
        let mut found = None;
        for g in &self.grants {
            let (a, b) = (g.token.as_bytes(), presented.as_bytes());
            let mut diff = a.len() ^ b.len();
            for (i, x) in a.iter().enumerate() {
                diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
            }
            if diff == 0 {
                found = Some(g);
            }
        }
        found
    }
}

/// Middleware: resolves the request's [`Scope`] (into its extensions) or answers 401.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let access: &Arc<Access> = &state.access;
    // The UI's static files and the API's description hold no data.
    let path = request.uri().path();
    let public = !path.starts_with("/api/") || path == "/api/v1/openapi.json";
    if access.is_open() || public {
        request.extensions_mut().insert(Scope::All);
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented.and_then(|t| access.grant(t)) {
        Some(grant) => {
            tracing::debug!(token = %grant.name, path = %request.uri().path(), "authorized");
            request.extensions_mut().insert(grant.scope.clone());
            next.run(request).await
        }
        None => {
            let message = if presented.is_none() {
                "send a token: Authorization: Bearer TOKEN"
            } else {
                "the token is not valid"
            };
            let mut response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "unauthorized", "message": message })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a header value"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn configuration_parses_and_refuses_weak_or_malformed_lines() {
        let access = Access::parse(&format!(
            "# comment\n\nadmin {A} *\nalice {B} /p/alice /s/alice # two\n"
        ))
        .unwrap();
        assert_eq!(access.grant(A).unwrap().scope, Scope::All);
        assert_eq!(
            access.grant(B).unwrap().scope,
            Scope::Prefixes(vec![b"/p/alice".to_vec(), b"/s/alice".to_vec()])
        );
        assert!(access.grant("bbbbbbbbbbbbbbbbbbbbbbbbbbb").is_none());
        assert!(access.grant("").is_none());
        for (bad, why) in [
            ("x short *", "shorter"),
            (&format!("x {A}") as &str, "no scope"),
            (&format!("x {A} relative"), "absolute"),
            (&format!("x {A} /a/"), "absolute"),
            (&format!("x {A} /a/../b"), "absolute"),
            (&format!("x {A} *\ny {A} *"), "twice"),
            ("lonely", "expected"),
        ] {
            let e = Access::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn prefixes_allow_themselves_and_below_only() {
        let s = Scope::Prefixes(vec![b"/p/alice".to_vec()]);
        assert!(s.allows(b"/p/alice"));
        assert!(s.allows(b"/p/alice/x/y"));
        assert!(!s.allows(b"/p/alicex"));
        assert!(!s.allows(b"/p"));
        assert!(!s.allows(b"/"));
        assert!(s.check(b"/q").unwrap_err().to_string().contains("/p/alice"));
        assert!(Scope::Prefixes(vec![b"/".to_vec()]).allows(b"/anything"));
        assert!(s.check_all("usage").is_err());
        assert!(Scope::All.check_all("usage").is_ok());
    }
}
