//! Password hashes for local users: argon2 PHC strings (what `postern
//! hash-password` writes) and bcrypt. A leaf module: the config validator and
//! the user table both use it.

use argon2::password_hash::{PasswordHasher, phc};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Argon2's working memory (`m_cost` KiB: 19 MiB for `postern hash-password`'s
/// hashes), kept by the caller between verifications. Reusing it saves
/// allocating and zeroing that much per AUTH, and keeps the process from
/// leaving a freed copy in each blocking thread's malloc arena (measured with
/// `scripts/bench.sh`: peak RSS ~445 MiB after 400 STARTTLS+AUTH sessions
/// from 10 clients, with a fresh allocation per check). Its contents need no
/// clearing: argon2's first pass writes every block before any is read.
#[derive(Default)]
pub struct Scratch(Vec<Block>);

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

    /// The hash string as configured.
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Argon2(s) | PasswordHash::Bcrypt(s) => s,
        }
    }

    /// Checks a password. CPU-heavy (tens of ms): call from a blocking thread.
    pub fn verify(&self, password: &str) -> bool {
        self.verify_with(password, &mut Scratch::default())
    }

    /// `verify`, with argon2's working memory taken from (and left in) `scratch`.
    pub fn verify_with(&self, password: &str, scratch: &mut Scratch) -> bool {
        match self {
            PasswordHash::Argon2(s) => argon2_verify(s, password.as_bytes(), scratch),
            PasswordHash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// What `argon2`'s own `verify_password` does (algorithm, version and
/// parameters from the PHC string, the same output length, a constant-time
/// comparison of the outputs), over caller-provided memory.
fn argon2_verify(phc_text: &str, password: &[u8], scratch: &mut Scratch) -> bool {
    let Ok(hash) = phc::PasswordHash::new(phc_text) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let blocks = params.block_count();
    if scratch.0.len() < blocks {
        scratch.0.resize(blocks, Block::default());
    }
    let mut out = [0u8; phc::Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut scratch.0[..blocks])
        .is_ok()
        && phc::Output::new(out).is_ok_and(|computed| computed == *expected)
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

/// An argon2id hash that no password matches, with the parameters
/// `hash_password` uses: what an unknown user is checked against. Its salt
/// and output are random bytes rather than argon2's work (one password in
/// 2^256 would match it), so making it costs no argon2 run and no 19 MiB at
/// start, and checking against it costs what checking a real hash does.
///
/// # Errors
/// Only if the system random source fails.
pub fn unmatchable_hash() -> Result<String, String> {
    use base64::Engine as _;
    let params = Params::default();
    let mut salt = [0u8; 16];
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    getrandom::fill(&mut salt)
        .and_then(|()| getrandom::fill(&mut output))
        .map_err(|e| format!("random: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        b64.encode(salt),
        b64.encode(output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parameters, salt and output lengths of a `PHC` string.
    fn shape(h: &str) -> (String, usize, usize) {
        let parsed = phc::PasswordHash::new(h).unwrap();
        let params = h.rsplitn(3, '$').nth(2).unwrap().to_owned();
        let salt = parsed.salt.unwrap().len();
        (params, salt, parsed.hash.unwrap().len())
    }

    #[test]
    fn the_unmatchable_hash_has_a_real_hashs_parameters_and_matches_nothing() {
        let real = hash_password("s3cret").unwrap();
        let dummy = unmatchable_hash().unwrap();
        assert_eq!(shape(&dummy), shape(&real), "{dummy} against {real}");
        assert_ne!(
            dummy,
            unmatchable_hash().unwrap(),
            "a fresh salt and output each time"
        );
        let parsed = PasswordHash::parse(&dummy).unwrap();
        for pw in ["", "s3cret", "postern-dummy-password-for-unknown-users"] {
            assert!(!parsed.verify(pw), "{pw:?}");
        }
    }

    #[test]
    fn argon2_round_trip_and_parse() {
        let h = hash_password("s3cret").unwrap();
        let parsed = PasswordHash::parse(&h).unwrap();
        assert!(parsed.verify("s3cret"));
        assert!(!parsed.verify("s3cret!"));
    }

    #[test]
    fn reused_scratch_gives_the_same_verdicts_as_argon2s_own_verifier() {
        use argon2::password_hash::PasswordVerifier;
        // Two parameter sets, so the scratch is reused at another size too.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let hashes = [
            hash_password("s3cret").unwrap(),
            small.hash_password(b"s3cret").unwrap().to_string(),
        ];
        let mut scratch = Scratch::default();
        for h in &hashes {
            let parsed = PasswordHash::parse(h).unwrap();
            let phc = phc::PasswordHash::new(h).unwrap();
            for pw in ["s3cret", "s3cret!", "", "S3cret"] {
                let theirs = Argon2::default()
                    .verify_password(pw.as_bytes(), &phc)
                    .is_ok();
                assert_eq!(parsed.verify_with(pw, &mut scratch), theirs, "{h} {pw:?}");
                assert_eq!(theirs, pw == "s3cret");
            }
        }
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
