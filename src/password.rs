//! Password hashes for local users: argon2 PHC strings (what `postern
//! hash-password` writes) and bcrypt. A leaf module: the config validator and
//! the user table both use it.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc};

/// A stored password hash.
#[derive(Clone, Debug)]
pub enum PasswordHash {
    /// An argon2 PHC string (`$argon2id$v=19$...`).
    Argon2(String),
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    Bcrypt(String),
}

impl PasswordHash {
    /// Recognises and checks the syntax of a hash string.
    ///
    /// # Errors
    /// A message saying what the string is not.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        if text.starts_with("$argon2") {
            phc::PasswordHash::new(text)
                .map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            return Ok(PasswordHash::Argon2(text.to_owned()));
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            if text.len() != 60 {
                return Err("not a valid bcrypt hash (expected 60 characters)".to_owned());
            }
            return Ok(PasswordHash::Bcrypt(text.to_owned()));
        }
        Err("expected an argon2 PHC string ($argon2id$...) from `postern hash-password`, or a bcrypt hash ($2b$...)".to_owned())
    }

    /// Checks a password. CPU-heavy (tens of ms): call from a blocking thread.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Argon2(s) => phc::PasswordHash::new(s).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            }),
            PasswordHash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// Hashes a password into an argon2id PHC string with a random salt.
///
/// # Errors
/// Only if the system random source fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip_and_parse() {
        let h = hash_password("s3cret").unwrap();
        let parsed = PasswordHash::parse(&h).unwrap();
        assert!(parsed.verify("s3cret"));
        assert!(!parsed.verify("s3cret!"));
    }

    #[test]
    fn bcrypt_hashes_are_accepted() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let parsed = PasswordHash::parse(&h).unwrap();
        assert!(parsed.verify("pw"));
        assert!(!parsed.verify("px"));
    }

    #[test]
    fn garbage_hashes_are_refused() {
        for bad in [
            "",
            "plaintext",
            "$argon2id$nonsense",
            "$2b$short",
            "$1$md5$crypt",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }
}
