//! `"8MiB"` sizes and `"30s"` durations: parsing, serde, and the wording of
//! their mistakes (a fraction gets the whole-number spelling proposed).

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A size in bytes: an integer or `"8MiB"`, `"512KiB"`, `"10MB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration: integer seconds or `"30s"`, `"5m"`, `"1h"`, `"250ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

/// Size units, largest first within each family; the multiplier in bytes.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1000),
];

/// Duration units, largest first; the multiplier in milliseconds.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

fn size_multiplier(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    })
}

fn duration_multiplier_ms(unit: &str) -> Option<u64> {
    DURATION_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, m)| *m)
        .or(if unit.is_empty() { Some(1000) } else { None })
}

/// `"1.5"` and a multiplier → the whole amount, when the fraction is exact in that unit's base.
fn fraction_total(num: &str, mult: u64) -> Option<u64> {
    let (int, frac) = num.split_once('.')?;
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let digits = u32::try_from(frac.len()).ok()?;
    let scale = 10u64.checked_pow(digits)?;
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scaled = int
        .checked_mul(scale)?
        .checked_add(frac)?
        .checked_mul(mult)?;
    (scaled % scale == 0).then_some(scaled / scale)
}

/// The largest unit of `units` (same family as `family_of`) that divides `total` evenly.
fn spell(total: u64, units: &[(&'static str, u64)], base: &str) -> String {
    for (u, m) in units {
        if total >= *m && total.is_multiple_of(*m) {
            return format!("{}{u}", total / m);
        }
    }
    format!("{total}{base}")
}

fn split_number(t: &str) -> (&str, &str) {
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    (num, unit.trim())
}

impl ByteSize {
    /// Parses `"8MiB"`-style sizes (binary and decimal units, case-insensitive).
    ///
    /// # Errors
    /// A message in words, proposing a whole-number spelling for a fraction.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let (num, unit) = split_number(t);
        let Some(mult) = size_multiplier(unit) else {
            return Err(format!(
                "invalid size unit {unit:?} in {text:?}: use B, KiB, MiB, GiB (or KB, MB, GB)"
            ));
        };
        if num.contains('.') {
            let family: Vec<_> = if unit.to_ascii_lowercase().contains('i') || unit.is_empty() {
                SIZE_UNITS[..3].to_vec()
            } else {
                SIZE_UNITS[3..].to_vec()
            };
            return Err(match fraction_total(num, mult) {
                Some(total) => format!(
                    "{text:?}: fractions are not accepted; write {:?}",
                    spell(total, &family, "")
                ),
                None => format!("{text:?}: fractions are not accepted; use a smaller unit"),
            });
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected e.g. \"8MiB\" or 1048576"))?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl Seconds {
    /// Parses `"30s"`-style durations.
    ///
    /// # Errors
    /// A message in words, proposing a whole-number spelling for a fraction.
    pub fn parse(text: &str) -> Result<Seconds, String> {
        let t = text.trim();
        let (num, unit) = split_number(t);
        let Some(mult) = duration_multiplier_ms(unit) else {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use ms, s, m or h, e.g. \"30s\""
            ));
        };
        if num.contains('.') {
            return Err(match fraction_total(num, mult) {
                Some(total) => format!(
                    "{text:?}: fractions are not accepted; write {:?}",
                    spell(total, DURATION_UNITS, "ms")
                ),
                None => format!("{text:?}: fractions are not accepted; use a smaller unit"),
            });
        }
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {text:?}: expected e.g. \"30s\", \"5m\" or 60")
        })?;
        Ok(Seconds(Duration::from_millis(n.saturating_mul(mult))))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => u64::try_from(n)
                .map(ByteSize)
                .map_err(|_| de::Error::custom(format!("size must not be negative, got {n}"))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => u64::try_from(n)
                .map(|n| Seconds(Duration::from_secs(n)))
                .map_err(|_| de::Error::custom(format!("duration must not be negative, got {n}"))),
            Raw::Text(t) => Seconds::parse(&t).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_get_a_whole_spelling() {
        let rows = [
            ("1.5m", "\"90s\""),
            ("0.5s", "\"500ms\""),
            ("1.5h", "\"90m\""),
            ("2.25s", "\"2250ms\""),
        ];
        for (input, want) in rows {
            let e = Seconds::parse(input).unwrap_err();
            assert!(e.contains("fractions") && e.contains(want), "{input}: {e}");
        }
        let rows = [
            ("1.5MiB", "\"1536KiB\""),
            ("1.5MB", "\"1500KB\""),
            ("0.5GiB", "\"512MiB\""),
        ];
        for (input, want) in rows {
            let e = ByteSize::parse(input).unwrap_err();
            assert!(e.contains("fractions") && e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn whole_values_parse() {
        assert_eq!(Seconds::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(
            Seconds::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(Seconds::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(ByteSize::parse("8MiB").unwrap().0, 8 << 20);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
    }
}
