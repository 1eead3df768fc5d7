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
            Self::Prefixes(prefixes) => prefixes.iter().any(|p| within(path, p)),
        }
    }

    /// `path` if readable, else the 403 that says what is.
    pub fn check(&self, path: &[u8]) -> Result<(), ApiError> {
        if self.allows(path) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this token may read only below {}; {:?} is outside it",
            self.describe(),
            String::from_utf8_lossy(path)
        )))
    }

    /// Whether a snapshot of `root` holds anything readable: a prefix at or below the root,
    /// or the root below a prefix.
    pub fn covers(&self, root: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Prefixes(prefixes) => prefixes.iter().any(|p| within(p, root) || within(root, p)),
        }
    }

    /// The readable directories of a snapshot of `root`, none inside another: the root when
    /// everything below it is readable, else the prefixes below it.
    pub fn tops_within(&self, root: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Self::All => vec![root.to_vec()],
            Self::Prefixes(_) if self.allows(root) => vec![root.to_vec()],
            Self::Prefixes(prefixes) => {
                let mut tops: Vec<Vec<u8>> = prefixes
                    .iter()
                    .filter(|p| within(p, root))
                    .cloned()
                    .collect();
                tops.sort();
                tops.dedup();
                let nested =
                    |t: &Vec<u8>, all: &[Vec<u8>]| all.iter().any(|o| o != t && within(t, o));
                let all = tops.clone();
                tops.retain(|t| !nested(t, &all));
                tops
            }
        }
    }

    /// The path prefixes readable, "/" for everything.
    pub fn prefixes(&self) -> Vec<Vec<u8>> {
        match self {
            Self::All => vec![b"/".to_vec()],
            Self::Prefixes(p) => p.clone(),
        }
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

/// Whether `path` is `dir` or below it.
fn within(path: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// The name of the token a request came with (absent when the API needs none).
#[derive(Debug, Clone)]
pub struct TokenName(pub String);

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

/// A line of the token configuration that cannot be used, with its source and line number.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}, line {line}: {problem}")]
pub struct ConfigError {
    source_name: String,
    line: usize,
    problem: ConfigProblem,
}

/// What is wrong with a line of the token configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("expected: NAME TOKEN SCOPE...")]
    NotNameTokenScope,
    #[error(
        "the token of {name} is shorter than {MIN_TOKEN_CHARS} characters; make one with `openssl rand -hex 24`"
    )]
    ShortToken { name: String },
    #[error("{name} has no scope: give * or path prefixes")]
    NoScope { name: String },
    #[error("{prefix:?} is not an absolute directory without a trailing '/' (or * alone)")]
    BadPrefix { prefix: String },
    #[error("the token of {name} is given twice")]
    TokenTwice { name: String },
    #[error("the name {name} is given twice; logs and /api/v1/access tell tokens apart by it")]
    NameTwice { name: String },
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
        let mut access = Self::default();
        access.add(text, "the token configuration")?;
        Ok(access)
    }

    /// Adds the tokens of one source (a file, the environment); errors name it and the line.
    pub fn add(&mut self, text: &str, source_name: &str) -> Result<(), ConfigError> {
        let grants = &mut self.grants;
        for (i, line) in text.lines().enumerate() {
            let err = |problem: ConfigProblem| ConfigError {
                source_name: source_name.to_owned(),
                line: i + 1,
                problem,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(token)) = (words.next(), words.next()) else {
                return Err(err(ConfigProblem::NotNameTokenScope));
            };
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(err(ConfigProblem::ShortToken {
                    name: name.to_owned(),
                }));
            }
            let scopes: Vec<&str> = words.collect();
            let scope = match scopes.as_slice() {
                [] => {
                    return Err(err(ConfigProblem::NoScope {
                        name: name.to_owned(),
                    }));
                }
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
                            return Err(err(ConfigProblem::BadPrefix {
                                prefix: (*p).to_owned(),
                            }));
                        }
                        out.push(p.as_bytes().to_vec());
                    }
                    Scope::Prefixes(out)
                }
            };
            if grants.iter().any(|g: &Grant| g.token == token) {
                return Err(err(ConfigProblem::TokenTwice {
                    name: name.to_owned(),
                }));
            }
            if grants.iter().any(|g: &Grant| g.name == name) {
                return Err(err(ConfigProblem::NameTwice {
                    name: name.to_owned(),
                }));
            }
            grants.push(Grant {
                name: name.to_owned(),
                token: token.to_owned(),
                scope,
            });
        }
        Ok(())
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

/// What `GET /api/v1/access` tells a caller about its token.
#[derive(Debug, serde::Serialize)]
pub struct AccessInfo {
    /// The token's name in the configuration; absent when the API needs no token.
    name: Option<String>,
    /// Whether it reads everything, snapshot-wide reports included.
    admin: bool,
    /// The directories it may read, with everything below them ("/" for everything).
    prefixes: Vec<String>,
    /// Whether the API needs a token; asked without one, the answer is this alone (nothing may
    /// be read), so a page can ask for a token without a failed request.
    token_required: bool,
}

/// `GET /api/v1/access`: what the presented token may read.
pub async fn describe(
    State(state): State<AppState>,
    scope: Option<axum::Extension<Scope>>,
    name: Option<axum::Extension<TokenName>>,
) -> axum::Json<AccessInfo> {
    let token_required = !state.access.is_open();
    let Some(axum::Extension(scope)) = scope else {
        return axum::Json(AccessInfo {
            name: None,
            admin: false,
            prefixes: Vec::new(),
            token_required,
        });
    };
    axum::Json(AccessInfo {
        name: name.map(|axum::Extension(TokenName(n))| n),
        admin: scope == Scope::All,
        prefixes: scope
            .prefixes()
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        token_required,
    })
}

/// The route that answers without a token too (saying that one is needed).
const ACCESS_ROUTE: &str = "/api/v1/access";

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
        .and_then(bearer_token);
    if presented.is_none() && request.uri().path() == ACCESS_ROUTE {
        return next.run(request).await;
    }
    match presented.and_then(|t| access.grant(t)) {
        Some(grant) => {
            tracing::debug!(token = %grant.name, path = %request.uri().path(), "authorized");
            request.extensions_mut().insert(grant.scope.clone());
            request
                .extensions_mut()
                .insert(TokenName(grant.name.clone()));
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

/// The token of an `Authorization: Bearer TOKEN` header; the scheme's name is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
            (&format!("x {A} *\nx {B} /p"), "name x is given twice"),
            ("lonely", "expected"),
        ] {
            let e = Access::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn lower_case_bearer_scheme_is_accepted() {
        assert_eq!(bearer_token(&format!("Bearer {A}")), Some(A));
        assert_eq!(bearer_token(&format!("bearer {A}")), Some(A));
        assert_eq!(bearer_token(&format!("BEARER  {A} ")), Some(A));
        assert_eq!(bearer_token(&format!("Basic {A}")), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn token_config_errors_name_the_source_and_its_own_line_number() {
        let mut access = Access::default();
        access
            .add(&format!("admin {A} *\n"), "STORAGE_TRACKER_API_TOKENS")
            .unwrap();
        let e = access
            .add(
                &format!("# first\nbob {B} /x\nlonely\n"),
                "tokens file t.conf",
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tokens file t.conf, line 3:"), "{e}");
        assert_eq!(access.grants.len(), 2);
    }

    #[test]
    fn scoped_tokens_cover_snapshots_that_hold_their_prefixes() {
        let s = Scope::Prefixes(vec![
            b"/t/proj/a".to_vec(),
            b"/u".to_vec(),
            b"/t/proj/a/b".to_vec(),
        ]);
        assert!(s.covers(b"/t"));
        assert!(s.covers(b"/t/proj/a/b/c"));
        assert!(s.covers(b"/"));
        assert!(!s.covers(b"/t/other"));
        assert!(!s.covers(b"/t/proj/ab"));
        assert_eq!(s.tops_within(b"/t"), vec![b"/t/proj/a".to_vec()]);
        assert_eq!(s.tops_within(b"/u/v"), vec![b"/u/v".to_vec()]);
        assert_eq!(s.tops_within(b"/x"), Vec::<Vec<u8>>::new());
        assert_eq!(Scope::All.tops_within(b"/x"), vec![b"/x".to_vec()]);
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
