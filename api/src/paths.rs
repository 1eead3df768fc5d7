//! Paths in requests and responses: raw bytes inside, text (or base64) outside.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::ApiError;

/// The path a request names: `path` (text) or `path_b64` (base64 of raw bytes), or neither.
#[derive(Debug, Default, Deserialize)]
pub struct PathParam {
    pub path: Option<String>,
    pub path_b64: Option<String>,
}

impl PathParam {
    /// The raw path, validated: absolute, no NUL, no empty, "." or ".." component, no
    /// trailing slash (except the root). `None` when the request names no path.
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, ApiError> {
        let raw = match (&self.path, &self.path_b64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give either path or path_b64, not both".into(),
                ));
            }
            (Some(p), None) => p.as_bytes().to_vec(),
            (None, Some(b)) => STANDARD
                .decode(b)
                .map_err(|e| ApiError::BadRequest(format!("path_b64 is not valid base64: {e}")))?,
            (None, None) => return Ok(None),
        };
        validate(&raw)?;
        Ok(Some(raw))
    }
}

fn validate(path: &[u8]) -> Result<(), ApiError> {
    let shown = String::from_utf8_lossy(path);
    if path.first() != Some(&b'/') {
        return Err(ApiError::BadRequest(format!(
            "path {shown:?} must be absolute (start with '/')"
        )));
    }
    if path.contains(&0) {
        return Err(ApiError::BadRequest("path contains a NUL byte".into()));
    }
    if path.len() > 1 && path.ends_with(b"/") {
        return Err(ApiError::BadRequest(format!(
            "path {shown:?} must not end with '/'"
        )));
    }
    if path.len() > 1
        && path[1..]
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err(ApiError::BadRequest(format!(
            "path {shown:?} has an empty, '.' or '..' component"
        )));
    }
    Ok(())
}

/// A path or name for JSON: always as text (invalid UTF-8 replaced), plus base64 of the raw
/// bytes when the text is not exact. Responses put them in `x` and `x_b64` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub text: String,
    pub b64: Option<String>,
}

impl Text {
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                text: s.to_owned(),
                b64: None,
            },
            Err(_) => Self {
                text: String::from_utf8_lossy(bytes).into_owned(),
                b64: Some(STANDARD.encode(bytes)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(path: Option<&str>, b64: Option<&str>) -> PathParam {
        PathParam {
            path: path.map(Into::into),
            path_b64: b64.map(Into::into),
        }
    }

    #[test]
    fn accepts_text_and_base64() {
        assert_eq!(
            param(Some("/a/b"), None).bytes().unwrap(),
            Some(b"/a/b".to_vec())
        );
        assert_eq!(
            param(None, Some(&STANDARD.encode(b"/x/\xff")))
                .bytes()
                .unwrap(),
            Some(b"/x/\xff".to_vec())
        );
        assert_eq!(param(Some("/"), None).bytes().unwrap(), Some(b"/".to_vec()));
        assert_eq!(param(None, None).bytes().unwrap(), None);
    }

    #[test]
    fn rejects_malformed_paths_with_a_reason() {
        for (p, why) in [
            ("a/b", "absolute"),
            ("/a/", "end with"),
            ("/a//b", "component"),
            ("/a/../b", "component"),
            ("/a/.", "component"),
        ] {
            let e = param(Some(p), None).bytes().unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        assert!(param(Some("/a"), Some("L2E=")).bytes().is_err());
        assert!(
            param(None, Some("!!"))
                .bytes()
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }

    #[test]
    fn text_carries_base64_only_when_needed() {
        assert_eq!(Text::of(b"caf\xc3\xa9").b64, None);
        let t = Text::of(b"bad\xff");
        assert_eq!(t.text, "bad\u{fffd}");
        assert_eq!(STANDARD.decode(t.b64.unwrap()).unwrap(), b"bad\xff");
    }
}
