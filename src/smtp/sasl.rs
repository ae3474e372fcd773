//! SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) decoding for
//! AUTH (RFC 4954). Strict base64: padding required, no whitespace.

use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::secret::{SecretBytes, SecretString};

/// Longest SASL response line postern reads, CRLF included (RFC 4954 §4).
pub const MAX_SASL_LINE: usize = 12288;
/// `334` prompt text for the LOGIN user name ("Username:").
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
/// `334` prompt text for the LOGIN password ("Password:").
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Credentials decoded from a SASL exchange. The password is wiped on drop;
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub authzid: String,
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a SASL response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4): 501 5.7.0.
    #[error("authentication cancelled")]
    Cancelled,
    /// Not strict base64, or not UTF-8: 501 5.5.2.
    #[error("cannot decode response")]
    BadBase64,
    /// Decoded, but not `[authzid] NUL authcid NUL passwd` or a field is empty or too long: 535 5.7.8.
    #[error("malformed credentials")]
    Malformed,
}

/// Longest field accepted (RFC 4616 requires at least 255).
const MAX_FIELD: usize = 1024;

/// Decodes one base64 response line (`=` is the empty response); the
/// decoded bytes are wiped on drop.
pub fn decode_response(line: &str) -> Result<SecretBytes, SaslError> {
    let line = line.trim_end_matches([' ', '\t']);
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(SecretBytes::default());
    }
    STANDARD
        .decode(line)
        .map(SecretBytes::new)
        .map_err(|_| SaslError::BadBase64)
}

/// Decodes a LOGIN user name or password response (wiped on drop: it may be
/// the password).
pub fn decode_login_field(line: &str) -> Result<SecretString, SaslError> {
    let bytes = decode_response(line)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| SaslError::BadBase64)?;
    if text.is_empty() || text.len() > MAX_FIELD || text.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(SecretString::from(text))
}

/// Decodes a PLAIN response: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(line: &str) -> Result<Credentials, SaslError> {
    let bytes = decode_response(line)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| SaslError::BadBase64)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let too_long = [authzid, username, password]
        .iter()
        .any(|f| f.len() > MAX_FIELD);
    if username.is_empty() || password.is_empty() || too_long {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        authzid: authzid.to_owned(),
        username: username.to_owned(),
        password: SecretString::from(password),
    })
}

/// Encodes PLAIN credentials (no authzid) for an upstream AUTH; the
/// plain text and the result are wiped when dropped.
pub fn encode_plain(username: &str, password: &str) -> SecretString {
    let plain = SecretString::new(format!("\0{username}\0{password}"));
    SecretString::new(STANDARD.encode(plain.expose()))
}

/// Encodes a secret LOGIN field (the password) for an upstream AUTH.
pub fn encode_secret(text: &str) -> SecretString {
    SecretString::new(STANDARD.encode(text))
}

/// Encodes one LOGIN field for an upstream AUTH.
pub fn encode(text: &str) -> String {
    STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(z: &str, u: &str, p: &str) -> Credentials {
        Credentials {
            authzid: z.into(),
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn plain_table() {
        let rows: Vec<(String, Result<Credentials, SaslError>)> = vec![
            (
                encode_plain("u", "p").expose().to_owned(),
                Ok(creds("", "u", "p")),
            ),
            (STANDARD.encode("u\0u\0p"), Ok(creds("u", "u", "p"))),
            (
                STANDARD.encode("\0ü\0pässwörd"),
                Ok(creds("", "ü", "pässwörd")),
            ),
            ("*".into(), Err(SaslError::Cancelled)),
            ("=".into(), Err(SaslError::Malformed)),
            ("not base64!".into(), Err(SaslError::BadBase64)),
            ("AHUAcA".into(), Err(SaslError::BadBase64)), // missing padding
            ("AHUA cA==".into(), Err(SaslError::BadBase64)),
            (STANDARD.encode("\0u"), Err(SaslError::Malformed)),
            (STANDARD.encode("\0\0p"), Err(SaslError::Malformed)),
            (STANDARD.encode("\0u\0"), Err(SaslError::Malformed)),
            (STANDARD.encode("a\0u\0p\0x"), Err(SaslError::Malformed)),
            (STANDARD.encode(b"\0u\0\xff"), Err(SaslError::BadBase64)),
        ];
        for (input, want) in rows {
            assert_eq!(decode_plain(&input), want, "input {input:?}");
        }
    }

    #[test]
    fn login_table() {
        assert_eq!(
            decode_login_field("dXNlcg=="),
            Ok(SecretString::from("user"))
        );
        assert_eq!(decode_login_field("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_login_field("="), Err(SaslError::Malformed));
        assert_eq!(decode_login_field("dXNlcg"), Err(SaslError::BadBase64));
    }

    #[test]
    fn debug_redacts_password() {
        let shown = format!("{:?}", creds("", "u", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
