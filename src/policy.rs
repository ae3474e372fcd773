//! Sender policy: which envelope senders a user may use (`allowed_senders`) and
//! what is sent upstream instead (`rewrite_sender`).

/// One `allowed_senders` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderPattern {
    /// `*`: any sender.
    Any,
    /// `*@example.com`: any local part at that domain (case-insensitive).
    Domain(String),
    /// `scanner@example.com`: exactly that address (domain case-insensitive).
    Exact(String),
}

impl SenderPattern {
    /// # Errors
    /// A message saying what a pattern must look like.
    pub fn parse(text: &str) -> Result<SenderPattern, String> {
        if text == "*" {
            return Ok(SenderPattern::Any);
        }
        if let Some(domain) = text.strip_prefix("*@") {
            if is_domain(domain) {
                return Ok(SenderPattern::Domain(domain.to_ascii_lowercase()));
            }
        } else if is_plain_address(text) {
            return Ok(SenderPattern::Exact(text.to_owned()));
        }
        Err(format!(
            "{text:?} is not a sender pattern: use user@example.com, *@example.com or *"
        ))
    }

    /// Whether `sender` (an envelope address, empty for `<>`) matches.
    pub fn matches(&self, sender: &str) -> bool {
        match self {
            SenderPattern::Any => true,
            SenderPattern::Domain(d) => {
                split(sender).is_some_and(|(_, sd)| sd.eq_ignore_ascii_case(d))
            }
            SenderPattern::Exact(a) => match (split(a), split(sender)) {
                (Some((al, ad)), Some((sl, sd))) => al == sl && ad.eq_ignore_ascii_case(sd),
                _ => false,
            },
        }
    }
}

fn split(addr: &str) -> Option<(&str, &str)> {
    addr.rsplit_once('@')
}

fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// A plain `local@domain` address with a dot-atom local part, as used in configs.
pub fn is_plain_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(atext)
        && is_domain(domain)
}

/// Whether a user with these `allowed_senders` may send as `sender`. A user
/// with `rewrite_sender` and no `allowed_senders` may use any envelope sender
/// (it is replaced anyway); one with neither may send as nobody.
pub fn sender_allowed(allowed: &[SenderPattern], rewrites: bool, sender: &str) -> bool {
    if allowed.is_empty() {
        return rewrites;
    }
    allowed.iter().any(|p| p.matches(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_table() {
        let rows: &[(&str, &str, bool)] = &[
            ("*", "anyone@anywhere.test", true),
            ("*", "", true),
            ("*@alerts.example.com", "ups@alerts.example.com", true),
            ("*@alerts.example.com", "ups@ALERTS.example.com", true),
            ("*@alerts.example.com", "ups@example.com", false),
            ("*@alerts.example.com", "", false),
            ("scanner@example.com", "scanner@example.com", true),
            ("scanner@example.com", "scanner@EXAMPLE.com", true),
            ("scanner@example.com", "Scanner@example.com", false),
            ("scanner@example.com", "scanner@example.com.evil", false),
            ("scanner@example.com", "", false),
        ];
        for (pattern, sender, want) in rows {
            let p = SenderPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(sender), *want, "{pattern} vs {sender:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "@x.com",
            "*@",
            "a@",
            "a b@c.d",
            "*.example.com",
            "a@b..c",
        ] {
            assert!(SenderPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
