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
    let dropped = |c: &char| matches!(c, '£' | 'Â' | ',' | ' ' | '\u{a0}');
    // The amount without the dropped characters: on the stack when it fits (it always does
    // for real amounts), so reading one allocates nothing.
    let mut buffer = [0u8; 64];
    let kept: String;
    let mut s = if raw.len() <= buffer.len() {
        let mut n = 0;
        for c in raw.chars().filter(|c| !dropped(c)) {
            n += c.encode_utf8(&mut buffer[n..]).len();
        }
        std::str::from_utf8(&buffer[..n]).expect("whole characters were copied")
    } else {
        kept = raw.chars().filter(|c| !dropped(c)).collect();
        kept.as_str()
    };
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.eq_ignore_ascii_case("nil") || s == "-" || s.eq_ignore_ascii_case("n/a") {
        return Ok(0);
    }
    let mut negative = false;
    if s.starts_with('(') && s.ends_with(')') && s.len() > 2 {
        negative = true;
        s = &s[1..s.len() - 1];
    }
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = rest;
    } else if let Some(rest) = s.strip_suffix('-') {
        negative = !negative;
        s = rest;
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
    /// The chrono form, parsed once (parsing a date does not re-read the format).
    items: Vec<chrono::format::Item<'static>>,
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
        let items = chrono::format::StrftimeItems::new(&chrono)
            .parse_to_owned()
            .map_err(|_| format!("date format \"{written}\" cannot be read back"))?;
        Ok(Self {
            written: written.to_string(),
            items,
        })
    }

    /// Parses a value with this format (as `NaiveDate::parse_from_str` with its chrono form).
    pub fn parse(&self, raw: &str) -> Option<NaiveDate> {
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, raw.trim(), self.items.iter()).ok()?;
        parsed.to_naive_date().ok()
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
    let mut out = String::with_capacity(raw.len());
    out.extend(
        raw.chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '/')),
    );
    out
}

/// Keeps only the ASCII digits (sort codes written `12-34-56`).
pub fn digits(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    out.extend(raw.chars().filter(char::is_ascii_digit));
    out
}

/// A date as `yyyy-mm-dd` (chrono's `%Y-%m-%d`), without reading a format string per date.
pub fn iso_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    if (0..=9999).contains(&d.year()) {
        let (y, m, day) = (d.year() as u32, d.month(), d.day());
        let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
        let mut out = String::with_capacity(10);
        out.extend([digit(y / 1000), digit(y / 100), digit(y / 10), digit(y)]);
        out.extend([
            '-',
            digit(m / 10),
            digit(m),
            '-',
            digit(day / 10),
            digit(day),
        ]);
        out
    } else {
        d.format("%Y-%m-%d").to_string()
    }
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
        // Longer than the stack buffer, and with characters of several bytes: the same reading.
        let long = format!("£{}1.50", " ".repeat(70));
        assert_eq!(parse_money(&long), Ok(150));
        let wide = format!("{}£12.50", "\u{a0}".repeat(40));
        assert_eq!(parse_money(&wide), Ok(1250));
        assert!(parse_money("£1é2.00").is_err());
    }

    #[test]
    fn iso_dates_are_chronos_form() {
        for (y, m, d) in [
            (2026, 10, 31),
            (0, 1, 1),
            (9, 2, 3),
            (99, 12, 9),
            (999, 6, 30),
            (1900, 2, 28),
            (9999, 12, 31),
            (-1, 1, 1),
            (10000, 1, 1),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(iso_date(date), date.format("%Y-%m-%d").to_string());
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

/// A period format (`yyyy-mm`, `MMMM yyyy`, `MMM-MMM-yyyy`, `MMMM yyyy-MMMM yyyy`, `yyyypp`):
/// the tokens `yyyy`/`yy` (year), `MMMM` (full month name), `MMM` (`Apr`), `mm` (two-digit
/// month), `pp` (financial-year period, April = 01, with the year the financial year starts
/// in); anything else matches itself, ignoring case. A second month (and year) makes a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodFormat {
    /// As written in the mapping.
    pub written: String,
    tokens: Vec<PeriodToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeriodToken {
    Year4,
    Year2,
    MonthName,
    MonthAbbr,
    Month2,
    FinancialPeriod,
    Literal(char),
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A period of whole days a source states instead of a day: `{start, end, precision}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub start: NaiveDate,
    /// Last day.
    pub end: NaiveDate,
    /// `month`, `quarter`, `year` or `range`.
    pub precision: &'static str,
}

impl PeriodFormat {
    /// Compiles a format, checking it names a month (or a financial period) and a year.
    pub fn new(written: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut rest = written;
        while !rest.is_empty() {
            let found = [
                ("yyyy", PeriodToken::Year4),
                ("MMMM", PeriodToken::MonthName),
                ("MMM", PeriodToken::MonthAbbr),
                ("yy", PeriodToken::Year2),
                ("mm", PeriodToken::Month2),
                ("pp", PeriodToken::FinancialPeriod),
            ]
            .into_iter()
            .find(|(t, _)| rest.starts_with(t));
            match found {
                Some((t, token)) => {
                    tokens.push(token);
                    rest = &rest[t.len()..];
                }
                None => {
                    let c = rest.chars().next().expect("not empty");
                    tokens.push(PeriodToken::Literal(c));
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        let count = |f: fn(&PeriodToken) -> bool| tokens.iter().filter(|t| f(t)).count();
        let years = count(|t| matches!(t, PeriodToken::Year4 | PeriodToken::Year2));
        let months = count(|t| {
            matches!(
                t,
                PeriodToken::MonthName | PeriodToken::MonthAbbr | PeriodToken::Month2
            )
        });
        let periods = count(|t| matches!(t, PeriodToken::FinancialPeriod));
        let ok = match periods {
            0 => (1..=2).contains(&years) && (1..=2).contains(&months) && years <= months,
            1 => years == 1 && months == 0,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "period format \"{written}\" must have a year (yyyy or yy) and one or two months \
                 (MMMM, MMM or mm), or a year and a financial period (yyyypp)"
            ));
        }
        Ok(Self {
            written: written.to_string(),
            tokens,
        })
    }

    /// Reads `raw` as a period, or `None` when it does not fit this format.
    pub fn parse(&self, raw: &str) -> Option<Period> {
        let text = raw.trim().to_lowercase();
        let mut rest = text.as_str();
        let (mut years, mut months, mut period) = (Vec::new(), Vec::new(), None);
        let digits = |rest: &str, n: usize| -> Option<u32> {
            let d = rest.get(..n)?;
            d.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| d.parse().ok())?
        };
        for t in &self.tokens {
            match t {
                PeriodToken::Year4 => {
                    years.push(digits(rest, 4)? as i32);
                    rest = &rest[4..];
                }
                PeriodToken::Year2 => {
                    years.push(2000 + digits(rest, 2)? as i32);
                    rest = &rest[2..];
                }
                PeriodToken::Month2 => {
                    months.push(digits(rest, 2)?);
                    rest = &rest[2..];
                }
                PeriodToken::FinancialPeriod => {
                    period = Some(digits(rest, 2)?);
                    rest = &rest[2..];
                }
                PeriodToken::MonthName => {
                    let (i, name) = MONTHS
                        .iter()
                        .enumerate()
                        .find(|(_, m)| rest.starts_with(*m))?;
                    months.push(i as u32 + 1);
                    rest = &rest[name.len()..];
                }
                PeriodToken::MonthAbbr => {
                    let i = MONTHS.iter().position(|m| rest.get(..3) == Some(&m[..3]))?;
                    months.push(i as u32 + 1);
                    rest = &rest[3..];
                }
                PeriodToken::Literal(c) => {
                    let c = c.to_lowercase().next().unwrap_or(*c);
                    rest = rest.strip_prefix(c)?;
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let (first, last) = match period {
            Some(p) if (1..=12).contains(&p) => {
                let month = (p + 2) % 12 + 1;
                let year = years[0] + i32::from(p >= 10);
                ((year, month), (year, month))
            }
            Some(_) => return None,
            None => {
                let m1 = months[0];
                let m2 = *months.last().expect("a month");
                let (y1, y2) = match years.as_slice() {
                    [y] if months.len() == 2 && m2 < m1 => (y - 1, *y),
                    [y] => (*y, *y),
                    [a, b] => (*a, *b),
                    _ => return None,
                };
                ((y1, m1), (y2, m2))
            }
        };
        let start = NaiveDate::from_ymd_opt(first.0, first.1, 1)?;
        let after = if last.1 == 12 {
            NaiveDate::from_ymd_opt(last.0 + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(last.0, last.1 + 1, 1)?
        };
        let end = after.pred_opt()?;
        if end < start {
            return None;
        }
        let span = (last.0 - first.0) * 12 + last.1 as i32 - first.1 as i32 + 1;
        let precision = match span {
            1 => "month",
            3 => "quarter",
            12 => "year",
            _ => "range",
        };
        Some(Period {
            start,
            end,
            precision,
        })
    }
}

/// Reads a period with the first of `formats` that fits.
pub fn parse_period(raw: &str, formats: &[PeriodFormat]) -> Result<Period, String> {
    formats.iter().find_map(|f| f.parse(raw)).ok_or_else(|| {
        let list: Vec<&str> = formats.iter().map(|f| f.written.as_str()).collect();
        format!("is not a period in the format {}", list.join(" or "))
    })
}

#[cfg(test)]
mod period_tests {
    use super::*;

    fn p(format: &str, raw: &str) -> Option<(String, String, &'static str)> {
        PeriodFormat::new(format)
            .unwrap()
            .parse(raw)
            .map(|p| (p.start.to_string(), p.end.to_string(), p.precision))
    }

    #[test]
    fn months_quarters_ranges_and_financial_periods() {
        let s = |a: &str, b: &str, c| Some((a.to_string(), b.to_string(), c));
        assert_eq!(
            p("yyyy-mm", "2015-02"),
            s("2015-02-01", "2015-02-28", "month")
        );
        assert_eq!(
            p("MMMM yyyy", "February 2016"),
            s("2016-02-01", "2016-02-29", "month")
        );
        assert_eq!(
            p("MMM-MMM-yyyy", "apr-jun-2014"),
            s("2014-04-01", "2014-06-30", "quarter")
        );
        assert_eq!(
            p("MMM-MMM-yyyy", "oct-nov-2017"),
            s("2017-10-01", "2017-11-30", "range")
        );
        assert_eq!(
            p("MMM-MMM-yyyy", "nov-jan-2018"),
            s("2017-11-01", "2018-01-31", "quarter")
        );
        assert_eq!(
            p("MMMM yyyy-MMMM yyyy", "July 2010-September 2010"),
            s("2010-07-01", "2010-09-30", "quarter")
        );
        assert_eq!(
            p("yyyypp", "201411"),
            s("2015-02-01", "2015-02-28", "month")
        );
        assert_eq!(
            p("yyyypp", "201401"),
            s("2014-04-01", "2014-04-30", "month")
        );
        assert_eq!(p("yyyypp", "201413"), None);
        assert_eq!(p("yyyy-mm", "2015-13"), None);
        assert_eq!(p("yyyy-mm", "2015-02x"), None);
        assert!(PeriodFormat::new("dd/mm").is_err());
        assert!(PeriodFormat::new("yyyy").is_err());
    }
}
