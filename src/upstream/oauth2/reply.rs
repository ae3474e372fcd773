//! The token endpoint's reply (RFC 6749 §5.1 and §5.2), sans I/O: the HTTP
//! status and the body bytes in, the token or the endpoint's refusal out.
//! It takes whatever bytes the endpoint sends (a fuzz target feeds it
//! arbitrary ones) and never panics; the words it keeps from an error reply
//! are control-free and bounded, and no secret is put into an error.

use std::time::Duration;

use super::TokenError;
use crate::secret::SecretString;

/// The lifetime assumed when the endpoint gives no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest lifetime believed: a token is fetched again at least daily,
/// and a huge `expires_in` cannot overflow the renewal time.
pub const MAX_LIFETIME: Duration = Duration::from_secs(86_400);
/// The most characters of `error` / `error_description` kept.
const MAX_WORDS: usize = 200;

/// A token endpoint's successful answer.
#[derive(Debug)]
pub struct TokenReply {
    pub access_token: SecretString,
    /// `expires_in` (a number, or a number in a string), else
    /// `DEFAULT_LIFETIME`; at most `MAX_LIFETIME`.
    pub lifetime: Duration,
    /// A new refresh token, when the endpoint rotates it.
    pub refresh_token: Option<SecretString>,
}

/// Reads a token endpoint's reply: a 2xx with an `access_token`, or the
/// endpoint's `error` and `error_description` words.
///
/// # Errors
/// `BadReply` for a body that is not a JSON object, `Refused` for a non-2xx
/// status or a reply without `access_token`.
pub fn parse(status: u16, body: &[u8], host: &str) -> Result<TokenReply, TokenError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| TokenError::BadReply("not JSON", host.into()))?;
    let field = |k: &str| json.get(k).and_then(|v| v.as_str());
    let access_token = field("access_token").filter(|t| !t.is_empty() && printable(t));
    let (true, Some(access_token)) = ((200..300).contains(&status), access_token) else {
        let description = words(field("error_description"));
        return Err(TokenError::Refused {
            host: host.into(),
            status,
            error: words(field("error")),
            description: if description.is_empty() {
                String::new()
            } else {
                format!(" ({description})")
            },
        });
    };
    let lifetime = json
        .get("expires_in")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .map_or(DEFAULT_LIFETIME, Duration::from_secs)
        .min(MAX_LIFETIME);
    let refresh_token = field("refresh_token")
        .filter(|t| !t.is_empty() && printable(t))
        .map(SecretString::from);
    Ok(TokenReply {
        access_token: SecretString::from(access_token),
        lifetime,
        refresh_token,
    })
}

/// A token goes into a SASL line and a file line: visible ASCII only
/// (RFC 6750's b64token is a subset).
fn printable(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_graphic())
}

/// The endpoint's words, without control characters, at most `MAX_WORDS`.
fn words(s: Option<&str>) -> String {
    s.map(|s| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(MAX_WORDS)
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_with_its_lifetime_and_a_rotated_refresh_token() {
        let r = parse(
            200,
            br#"{"access_token":"ya29.a0","expires_in":"1800","refresh_token":"1//new","token_type":"Bearer"}"#,
            "h",
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "ya29.a0");
        assert_eq!(r.lifetime, Duration::from_secs(1800));
        assert_eq!(r.refresh_token.unwrap().expose(), "1//new");
        let r = parse(
            200,
            br#"{"access_token":"t","expires_in":18446744073709551615}"#,
            "h",
        )
        .unwrap();
        assert_eq!(r.lifetime, MAX_LIFETIME);
        let r = parse(200, br#"{"access_token":"t"}"#, "h").unwrap();
        assert_eq!(r.lifetime, DEFAULT_LIFETIME);
        assert!(r.refresh_token.is_none());
    }

    #[test]
    fn refusals_keep_only_bounded_words() {
        let e = parse(
            400,
            b"{\"error\":\"invalid_grant\",\"error_description\":\"Token has been\\n expired or revoked.\"}",
            "oauth2.example",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "token endpoint oauth2.example answered 400: invalid_grant (Token has been expired or revoked.)"
        );
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(5000));
        let e = parse(401, long.as_bytes(), "h").unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn a_2xx_without_a_usable_token_is_refused_and_not_json_is_bad() {
        for body in [
            &br#"{"token_type":"Bearer"}"#[..],
            br#"{"access_token":""}"#,
            br#"{"access_token":"a b"}"#,
            b"{\"access_token\":\"a\\r\\nQUIT\"}",
            br#"{"access_token":7}"#,
        ] {
            assert!(
                matches!(parse(200, body, "h"), Err(TokenError::Refused { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse(200, b"<html>", "h"),
            Err(TokenError::BadReply(..))
        ));
    }
}
