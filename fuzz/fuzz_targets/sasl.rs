//! The SASL decoders (AUTH PLAIN and LOGIN responses) over arbitrary text: no
//! panic; what they accept is bounded and well-formed (no NUL inside a field,
//! no empty user name or password); PLAIN credentials encode and decode back
//! to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::sasl::{
    SaslError, decode_login_field, decode_plain, decode_response, encode, encode_plain,
};

fuzz_target!(|input: &[u8]| {
    let Ok(line) = std::str::from_utf8(input) else {
        return;
    };
    let response = decode_response(line);
    if line.trim_end_matches([' ', '\t']) == "*" {
        assert_eq!(response, Err(SaslError::Cancelled));
    }
    if let Ok(creds) = decode_plain(line) {
        assert!(response.is_ok());
        let password = creds.password.expose();
        for field in [creds.authzid.as_str(), creds.username.as_str(), password] {
            assert!(!field.contains('\0') && field.len() <= 1024);
        }
        assert!(!creds.username.is_empty() && !password.is_empty());
        let again = decode_plain(encode_plain(&creds.username, password).expose())
            .expect("encoded credentials decode");
        assert_eq!(again.username, creds.username);
        assert_eq!(again.password.expose(), password);
    }
    if let Ok(field) = decode_login_field(line) {
        let field = field.expose();
        assert!(!field.is_empty() && field.len() <= 1024 && !field.contains('\0'));
        let again = decode_login_field(&encode(field)).expect("an encoded field decodes");
        assert_eq!(again.expose(), field);
    }
});
