//! The OAuth2 token endpoint's reply (bytes from the network) over arbitrary
//! status codes and bodies: no panic; a token is only taken from a 2xx and is
//! visible ASCII (it goes into a SASL line and a file line); the words kept
//! from a refusal are bounded and free of control characters (they go into a
//! log line and a 4xx text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::upstream::oauth2::TokenError;
use postern::upstream::oauth2::reply::parse;

fuzz_target!(|input: &[u8]| {
    let Some((&[hi, lo], body)) = input.split_first_chunk::<2>().map(|(s, b)| (s, b)) else {
        return;
    };
    let status = 100 + u16::from_be_bytes([hi, lo]) % 500;
    match parse(status, body, "token.example") {
        Ok(reply) => {
            assert!((200..300).contains(&status));
            assert!(reply.lifetime <= postern::upstream::oauth2::reply::MAX_LIFETIME);
            let token = reply.access_token.expose();
            assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
            if let Some(rt) = &reply.refresh_token {
                assert!(rt.expose().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        Err(e) => {
            if let TokenError::Refused {
                error, description, ..
            } = &e
            {
                assert!(error.chars().count() <= 200);
                assert!(description.chars().count() <= 203);
                assert!(
                    !error
                        .chars()
                        .chain(description.chars())
                        .any(char::is_control)
                );
            }
            let text = e.to_string();
            assert!(!text.contains('\r') && !text.contains('\n'));
        }
    }
});
