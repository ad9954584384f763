//! The value transforms a mapping can name. Pure functions over strings: no I/O, no state.
//! Error messages never repeat the value (it may be personal data); callers keep the value
//! apart so that displays can mask it.

use chrono::NaiveDate;

/// Parses a money amount into integer pence.
///
/// Accepts `£` (and a stray `Â` from mis-decoded UTF-8), thousands commas, surrounding and inner
/// spaces, a leading or trailing `-`, accounting brackets `(12.50)`, and `Nil`, `-`, `N/A` as
/// zero. At most two decimal places: pence are never rounded.
pub fn parse_money(raw: &str) -> Result<i64, String> {
    let mut s: String = raw
        .chars()
        .filter(|c| !matches!(c, '£' | 'Â' | ',' | ' ' | '\u{a0}'))
        .collect();
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.eq_ignore_ascii_case("nil") || s == "-" || s.eq_ignore_ascii_case("n/a") {
        return Ok(0);
    }
    let mut negative = false;
    if s.starts_with('(') && s.ends_with(')') && s.len() > 2 {
        negative = true;
        s = s[1..s.len() - 1].to_string();
    }
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = rest.to_string();
    } else if let Some(rest) = s.strip_suffix('-') {
        negative = !negative;
        s = rest.to_string();
    }
    // "-£5.00" and "£-5.00" both end up here with the sign handled.
    let s = s.trim_start_matches('£');
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let digits_ok = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) {
        return Err("is not an amount of money (expected e.g. 1,234.56)".into());
    }
    if frac.len() > 2 {
        return Err("has more than two decimal places".into());
    }
    let pounds: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| "is too large".to_string())?
    };
    let pence: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().unwrap_or(0) * 10,
        _ => frac.parse().unwrap_or(0),
    };
    let total = pounds
        .checked_mul(100)
        .and_then(|p| p.checked_add(pence))
        .ok_or("is too large")?;
    Ok(if negative { -total } else { total })
}

/// Parses an amount already in pence, as mainframe and BACS files write it: digits, zero-filled,
/// with an optional leading or trailing sign (`0012345` = £123.45, `0000450-` = -£4.50).
pub fn parse_pence(raw: &str) -> Result<i64, String> {
    let s = raw.trim();
    let (negative, digits) = if let Some(d) = s.strip_prefix('-') {
        (true, d)
    } else if let Some(d) = s.strip_suffix('-') {
        (true, d)
    } else {
        (
            false,
            s.strip_prefix('+')
                .or_else(|| s.strip_suffix('+'))
                .unwrap_or(s),
        )
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("is not a whole number of pence (expected digits, e.g. 0012345)".into());
    }
    let v: i64 = digits.parse().map_err(|_| "is too large".to_string())?;
    Ok(if negative { -v } else { v })
}

/// Parses a whole number, allowing thousands commas.
pub fn parse_integer(raw: &str) -> Result<i64, String> {
    let s: String = raw.trim().chars().filter(|c| *c != ',').collect();
    s.parse().map_err(|_| "is not a whole number".to_string())
}

/// Parses a decimal number.
pub fn parse_decimal(raw: &str) -> Result<f64, String> {
    let s: String = raw.trim().chars().filter(|c| *c != ',').collect();
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("is not a number".into()),
    }
}

/// Parses a yes/no value.
pub fn parse_boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "t" | "1" => Ok(true),
        "n" | "no" | "false" | "f" | "0" => Ok(false),
        _ => Err("is not yes/no (expected Y/N, yes/no, true/false or 1/0)".into()),
    }
}

/// A date format: written as officers write them (`dd/mm/yyyy`, `d-MMM-yyyy`) or as a chrono
/// format (`%d/%m/%Y`). Compiled once into the chrono form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    /// As written in the mapping.
    pub written: String,
    chrono: String,
}

impl DateFormat {
    /// Compiles a format, checking it can describe a whole date.
    pub fn new(written: &str) -> Result<Self, String> {
        let chrono = if written.contains('%') {
            written.to_string()
        } else {
            translate(written)
        };
        let has = |t: &[&str]| t.iter().any(|x| chrono.contains(x));
        if !(has(&["%Y", "%y"]) && has(&["%m", "%b", "%B"]) && has(&["%d", "%e"])) {
            return Err(format!(
                "date format \"{written}\" must have a day (dd), a month (mm or MMM) and a year (yyyy or yy)"
            ));
        }
        // Check chrono accepts it by formatting a known date.
        let probe = NaiveDate::from_ymd_opt(2026, 4, 6).expect("valid date");
        let shown = probe.format(&chrono).to_string();
        if NaiveDate::parse_from_str(&shown, &chrono) != Ok(probe) {
            return Err(format!("date format \"{written}\" cannot be read back"));
        }
        Ok(Self {
            written: written.to_string(),
            chrono,
        })
    }

    /// Parses a value with this format.
    pub fn parse(&self, raw: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(raw.trim(), &self.chrono).ok()
    }
}

fn translate(written: &str) -> String {
    let mut out = String::new();
    let mut rest = written;
    while !rest.is_empty() {
        let (token, len) = [
            ("yyyy", "%Y"),
            ("MMMM", "%B"),
            ("MMM", "%b"),
            ("yy", "%y"),
            ("mm", "%m"),
            ("dd", "%d"),
            ("m", "%m"),
            ("d", "%d"),
        ]
        .iter()
        .find(|(t, _)| rest.starts_with(t))
        .map(|(t, c)| (*c, t.len()))
        .unwrap_or(("", 0));
        if len > 0 {
            out.push_str(token);
            rest = &rest[len..];
        } else {
            let c = rest.chars().next().expect("not empty");
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Parses a date with the first of `formats` that fits.
pub fn parse_date(raw: &str, formats: &[DateFormat]) -> Result<NaiveDate, String> {
    formats.iter().find_map(|f| f.parse(raw)).ok_or_else(|| {
        let list: Vec<&str> = formats.iter().map(|f| f.written.as_str()).collect();
        format!("is not a valid date in the format {}", list.join(" or "))
    })
}

/// Removes spaces and the punctuation `- . /` (NI numbers written `QQ 12 34 56 C`).
pub fn compact(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '/'))
        .collect()
}

/// Keeps only the ASCII digits (sort codes written `12-34-56`).
pub fn digits(raw: &str) -> String {
    raw.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_the_forms_councils_write_it() {
        let cases = [
            ("£1,234.56", Ok(123456)),
            ("1234.5", Ok(123450)),
            ("313.4", Ok(31340)),
            ("599", Ok(59900)),
            ("1222.00 ", Ok(122200)),
            ("-793.84", Ok(-79384)),
            ("-£45.00", Ok(-4500)),
            ("£-45.00", Ok(-4500)),
            ("(12.50)", Ok(-1250)),
            ("12.50-", Ok(-1250)),
            ("Nil", Ok(0)),
            ("N/A", Ok(0)),
            (".5", Ok(50)),
            ("£0.01", Ok(1)),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_money(raw), want, "{raw}");
        }
        for bad in [
            "",
            "12.345",
            "1.2.3",
            "abc",
            "£",
            "12,34x",
            "--5",
            "99999999999999999999",
        ] {
            assert!(parse_money(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn dates_in_officer_notation() {
        let f = |s: &str| DateFormat::new(s).unwrap();
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(
            parse_date("06/04/2026", &[f("dd/mm/yyyy")]),
            Ok(d(2026, 4, 6))
        );
        assert_eq!(
            parse_date("6/4/2026", &[f("dd/mm/yyyy")]),
            Ok(d(2026, 4, 6))
        );
        assert_eq!(
            parse_date("06-Apr-2011", &[f("d-MMM-yyyy")]),
            Ok(d(2011, 4, 6))
        );
        assert_eq!(
            parse_date("06-APR-2011", &[f("dd-MMM-yyyy")]),
            Ok(d(2011, 4, 6))
        );
        assert_eq!(
            parse_date("2026-04-06", &[f("dd/mm/yyyy"), f("yyyy-mm-dd")]),
            Ok(d(2026, 4, 6))
        );
        assert_eq!(parse_date("06/04/26", &[f("%d/%m/%y")]), Ok(d(2026, 4, 6)));
        let err = parse_date("31/02/2019", &[f("dd/mm/yyyy")]).unwrap_err();
        assert!(err.contains("dd/mm/yyyy"), "{err}");
        assert!(DateFormat::new("mm/yyyy").is_err());
    }

    #[test]
    fn pence_as_mainframes_write_them() {
        assert_eq!(parse_pence("0012345"), Ok(12345));
        assert_eq!(parse_pence("0000450-"), Ok(-450));
        assert_eq!(parse_pence("-450"), Ok(-450));
        assert_eq!(parse_pence("+0000001"), Ok(1));
        for bad in ["", "12.50", "12a", "--1"] {
            assert!(parse_pence(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_booleans_and_cleaning() {
        assert_eq!(parse_integer("1,200"), Ok(1200));
        assert!(parse_integer("1.5").is_err());
        assert_eq!(parse_decimal("0.8"), Ok(0.8));
        assert!(parse_decimal("NaN").is_err());
        assert_eq!(parse_boolean("Y"), Ok(true));
        assert_eq!(parse_boolean("no"), Ok(false));
        assert!(parse_boolean("maybe").is_err());
        assert_eq!(compact("jx 12 34 56 a"), "jx123456a");
        assert_eq!(digits("40-12-76"), "401276");
    }
}
