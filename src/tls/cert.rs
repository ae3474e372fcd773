//! Just enough of an X.509 certificate to explain a verification failure and
//! for `postern doctor`: the subject and issuer common names, whether the
//! certificate issued itself, and its validity dates.
//!
//! Why not a parser crate: rustls has already parsed and checked (or refused)
//! the certificate by the time this runs, so this only has to *describe* it.
//! x509-parser would bring a dozen crates (nom, asn1-rs, der-parser,
//! oid-registry and their derive macros) into the normal build for four
//! fields. This reader is bounds-checked DER over a byte slice: it returns
//! `None` on anything it does not expect, never panics, and allocates only the
//! names it returns.

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name (or organisation), as written.
    pub subject: String,
    /// The issuer's common name (or organisation).
    pub issuer: String,
    /// The issuer name equals the subject name byte for byte.
    pub self_issued: bool,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// Reads a DER certificate; `None` when it is not one this reader follows.
pub fn inspect(der: &[u8]) -> Option<CertInfo> {
    let (cert, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.1; // [0] version
    }
    rest = tlv(rest, 0x02)?.1; // serial
    rest = tlv(rest, 0x30)?.1; // signature algorithm
    let (issuer, r) = tlv(rest, 0x30)?;
    let (validity, r) = tlv(r, 0x30)?;
    let (subject, _) = tlv(r, 0x30)?;
    let (not_before, v) = time(validity)?;
    let (not_after, _) = time(v)?;
    Some(CertInfo {
        subject: name(subject),
        issuer: name(issuer),
        self_issued: issuer == subject,
        not_before,
        not_after,
    })
}

/// One DER element of `tag` at the start of `input`: (its content, what follows).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// Any element: (tag, content, rest).
fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let (content, rest) = tlv(input, tag)?;
    Some((tag, content, rest))
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// The common name of an X.501 Name, else its organisation, else "(no name)".
fn name(mut rdns: &[u8]) -> String {
    let mut org = None;
    while let Some((content, rest)) = tlv(rdns, 0x31) {
        rdns = rest;
        let mut set = content;
        while let Some((atv, r)) = tlv(set, 0x30) {
            set = r;
            let Some((oid, value)) = tlv(atv, 0x06) else {
                continue;
            };
            let Some((_, text, _)) = any(value) else {
                continue;
            };
            let text = String::from_utf8_lossy(text).into_owned();
            if oid == OID_CN {
                return text;
            }
            if oid == OID_O {
                org = Some(text);
            }
        }
    }
    org.unwrap_or_else(|| "(no name)".to_owned())
}

/// A UTCTime or GeneralizedTime, as Unix seconds.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, text, rest) = any(input)?;
    let text = std::str::from_utf8(text).ok()?;
    let text = text.strip_suffix('Z')?;
    let (year, rest_digits) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest_digits.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + min * 60 + sec, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of Unix seconds (UTC).
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for (y, m, d, want) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 951_868_800),
            (2026, 12, 1, 1_796_083_200),
        ] {
            assert_eq!(days_from_civil(y, m, d) * 86_400, want);
            assert_eq!(utc_date(want), format!("{y:04}-{m:02}-{d:02}"));
        }
    }

    #[test]
    fn reads_an_rcgen_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mx.example.test");
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 7, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = inspect(cert.der()).unwrap();
        assert_eq!(info.subject, "mx.example.test");
        assert_eq!(info.issuer, "mx.example.test");
        assert!(info.self_issued);
        assert_eq!(utc_date(info.not_before), "2024-02-29");
        assert_eq!(utc_date(info.not_after), "2051-07-01");
        // Cut short anywhere, it is not read.
        for n in [1, 10, cert.der().len() / 2, cert.der().len() - 1] {
            assert_eq!(inspect(&cert.der()[..n]), None, "{n}");
        }
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(inspect(b""), None);
        assert_eq!(inspect(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(inspect(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
