//! Format checks for UK identifiers used as custom JSON Schema formats in the canonical model.
//!
//! Every check here works on the **canonical** form of a value only: the mapping layer is
//! expected to normalise input first (strip spaces and punctuation, upper-case, single space in a
//! postcode). A value in any other form — lower case, spaced, padded — is rejected, so a record
//! that skipped normalisation fails validation instead of slipping through.
//!
//! The rules come from `shared/design/uk-identifiers.md` (§3.1 NINO, §3.2 sort code, §3.3
//! postcode, §3.4 VAT number, §3.5 company number) and, for the HMRC tax code and employer PAYE
//! reference, `shared/design/canonical-model.md` §2.2 (which §3.6 points to). These are *format*
//! checks: a value that passes is well-formed, not known to exist. A NINO must never be used to
//! verify identity. Bank account modulus checking needs Vocalink's tables and lives in
//! [`super::modulus`].
//!
//! This module is pure: no I/O, and the only dependency is the `regex` crate. The `regex` crate
//! has no look-around, so the NINO prefix exclusions are checked in code beside the pattern.

use std::sync::LazyLock;

use regex::Regex;

/// NINO shape: two prefix letters, six digits, suffix `A`–`D`.
///
/// First letter: never `D F I Q U V`. Second letter: never `D F I Q U V`, nor `O`.
/// The banned prefixes are checked separately in [`is_nino`] (no look-ahead in `regex`).
static NINO_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]$").expect("valid NINO regex")
});

/// Prefixes never allocated (`BG GB KN NK NT TN ZZ`) plus the administrative look-alikes
/// (`OO CR FY MW NC`). Some of these are already excluded by the letter classes of
/// [`NINO_RE`]; listing them all keeps the rule readable and robust to changes to the pattern.
const NINO_BANNED_PREFIXES: [&str; 12] = [
    "BG", "GB", "KN", "NK", "NT", "TN", "ZZ", // not used
    "OO", "CR", "FY", "MW", "NC", // administrative look-alikes
];

/// UK postcode (BS 7666) in canonical form: outward code, one space, inward code; or `GIR 0AA`.
///
/// Outward shapes `AN`, `ANN`, `AAN`, `AANN`, `ANA`, `AANA`:
/// * 1st position: any letter but `Q V X`;
/// * 2nd position (when a letter): any letter but `I J Z`;
/// * 3rd position (shape `ANA`): `A B C D E F G H J K S T U W` only;
/// * 4th position (shape `AANA`): `A B E H M N P R V W X Y` only.
///
/// Inward: a digit then two letters, never `C I K M O V`.
static POSTCODE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:GIR 0AA|",
        r"(?:",
        r"[A-PR-UWYZ][0-9]{1,2}",                   // AN, ANN
        r"|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}",          // AAN, AANN
        r"|[A-PR-UWYZ][0-9][A-HJKSTUW]",            // ANA
        r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY]", // AANA
        r") [0-9][ABD-HJLNP-UW-Z]{2}",
        r")$",
    ))
    .expect("valid postcode regex")
});

/// Returns `true` if `s` is a National Insurance number in canonical form (`QQ123456C` style:
/// exactly 9 characters, upper case, no spaces).
///
/// Rules (uk-identifiers §3.1): two prefix letters, six digits, a suffix `A`–`D`; `D F I Q U V`
/// are never the first or second letter and `O` is never the second; the prefixes
/// `BG GB KN NK NT TN ZZ` are not used; administrative look-alikes with the prefixes
/// `OO CR FY MW NC` and Temporary Reference Numbers (`11A11111`) are rejected. The RTI space
/// suffix is not accepted here: this is the canonical form.
pub fn is_nino(s: &str) -> bool {
    s.len() == 9
        && NINO_RE.is_match(s)
        && !NINO_BANNED_PREFIXES
            .iter()
            .any(|prefix| s.starts_with(prefix))
}

/// Returns `true` if `s` is a bank sort code in canonical form: exactly 6 ASCII digits, with no
/// hyphens or spaces (`123456`, not `12-34-56`).
///
/// This is a format check only; modulus checking (uk-identifiers §3.2) needs the account number
/// and the Vocalink reference tables.
pub fn is_sort_code(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Returns `true` if `s` is a UK postcode in canonical form: upper case, with exactly one space
/// between the outward and inward codes (`EC1A 1BB`, `M1 1AA`), or the special `GIR 0AA`.
///
/// Letter rules (uk-identifiers §3.3): `Q V X` never 1st; `I J Z` never 2nd; the 3rd position
/// (outward shape `ANA`) only `A B C D E F G H J K S T U W`; the 4th position (shape `AANA`) only
/// `A B E H M N P R V W X Y`; the inward letters never `C I K M O V`. BFPO and overseas-territory
/// codes are not accepted.
pub fn is_uk_postcode(s: &str) -> bool {
    POSTCODE_RE.is_match(s)
}

/// Weights of the first seven digits of a standard VAT number (uk-identifiers §3.4).
const VAT_WEIGHTS: [u32; 7] = [8, 7, 6, 5, 4, 3, 2];

/// Offsets of the two check-digit series (uk-identifiers §3.4): the original "97" series (0) and
/// the "9755" series issued since November 2009 (55, *added* to the weighted total; see
/// [`is_vat_number`]).
const VAT_SERIES_OFFSETS: [u32; 2] = [0, 55];

/// Returns `true` if `s` is a UK VAT registration number in canonical form: upper case, no spaces
/// or punctuation, with or without the `GB` prefix.
///
/// Accepted forms (uk-identifiers §3.4):
/// * a standard number of 9 digits (`831495816`, `GB831495816`), Isle of Man numbers (starting
///   `00`) included;
/// * a branch trader's 12 digits: a standard number plus a 3-digit branch suffix, which carries
///   no check digits (`831495816001`);
/// * `GD000`–`GD499` (government departments) and `HA500`–`HA999` (health authorities), which
///   carry no check digits (`GD001`, `GBHA500`).
///
/// The check digits of a standard number (its 8th and 9th digits): weight the first seven digits
/// 8, 7, 6, 5, 4, 3, 2 and sum; subtract 97 until the result is negative; its absolute value must
/// equal the check digits. Either series passes: the "97" series starts from the sum, the "9755"
/// series from the sum **plus** 55. (§3.4 says "subtract 55"; real numbers of the 9755 series
/// only pass when 55 is added, as in the EU VIES rules.) Check digits `00`, `98` and `99` can
/// therefore never pass. Not accepted: the `XI` (Northern Ireland) prefix, the EU-style
/// `GD8888…`/`HA8888…` forms, and any spacing.
pub fn is_vat_number(s: &str) -> bool {
    let body = s.strip_prefix("GB").unwrap_or(s);
    match body.as_bytes() {
        [b'G', b'D', rest @ ..] => three_digit_number(rest).is_some_and(|n| n <= 499),
        [b'H', b'A', rest @ ..] => three_digit_number(rest).is_some_and(|n| n >= 500),
        digits
            if (digits.len() == 9 || digits.len() == 12)
                && digits.iter().all(u8::is_ascii_digit) =>
        {
            vat_check_digits_pass(&digits[..9])
        }
        _ => false,
    }
}

/// The value of exactly three ASCII digits.
fn three_digit_number(b: &[u8]) -> Option<u32> {
    match b {
        [x, y, z] if b.iter().all(u8::is_ascii_digit) => {
            Some(u32::from(x - b'0') * 100 + u32::from(y - b'0') * 10 + u32::from(z - b'0'))
        }
        _ => None,
    }
}

/// The check-digit test of a standard VAT number (9 ASCII digits); see [`is_vat_number`].
fn vat_check_digits_pass(digits: &[u8]) -> bool {
    let digit = |i: usize| u32::from(digits[i] - b'0');
    let total: u32 = VAT_WEIGHTS
        .iter()
        .enumerate()
        .map(|(i, w)| digit(i) * w)
        .sum();
    let check = digit(7) * 10 + digit(8);
    // "Subtract 97 until negative, take the absolute value" is 97 - (start mod 97): 1..=97.
    VAT_SERIES_OFFSETS
        .iter()
        .any(|offset| 97 - (total + offset) % 97 == check)
}

/// Companies House company number: the regex of uk-identifiers §3.5 (tested there against 13.6
/// million real numbers), kept verbatim but wrapped as `^(?: … )$`. As published, `^` and `$`
/// bind only to the first and last alternatives, so `0632733499` and `SC119718X` would pass.
/// `(?-u)` makes `\d` ASCII-only (the `regex` crate's `\d` is Unicode by default).
static COMPANY_NUMBER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?-u)^(?:",
        r"((AC|ZC|FC|GE|LP|OC|SE|SA|SZ|SF|GS|SL|SO|SC|ES|NA|NZ|NF|GN|NL|NC|R0|NI|EN|\d{2}|SG|FE)\d{5}(\d|C|R))",
        r"|((RS|SO)\d{3}(\d{3}|\d{2}[WSRCZF]|\d(FI|RS|SA|IP|US|EN|AS)|CUS))",
        r"|((NI|SL)\d{5}[\dA])",
        r"|(OC(([\dP]{5}[CWERTB])|([\dP]{4}(OC|CU))))",
        r")$",
    ))
    .expect("valid company number regex")
});

/// Returns `true` if `s` is a Companies House company number in canonical form: exactly 8
/// characters, upper case, left-padded with zeros (`00445790`, `SC119718`, `NI018971`,
/// `OC301234`).
///
/// The pattern is the published one of uk-identifiers §3.5, anchored as a whole. It covers the
/// prefixes that regex lists (none = England & Wales, `SC`, `NI`, `OC`/`SO`/`NC`, `LP`/`SL`,
/// `FC`/`SF`/`NF`, `R0`, `RS`, and others); note that it has no `IP`, `SP` or `RC` prefix, so
/// those are rejected although §3.5's prose names them. A number whose leading zeros were
/// dropped (`1332249`) fails: normalise it with [`normalise_company_number`] first.
pub fn is_company_number(s: &str) -> bool {
    COMPANY_NUMBER_RE.is_match(s)
}

/// Normalises a company number as written in a council file towards the canonical form: trims
/// surrounding whitespace, upper-cases ASCII letters, and left-pads a purely numeric value of 1–7
/// digits with zeros to 8, undoing spreadsheets' dropped leading zeros (`1332249` →
/// `01332249`; uk-identifiers §3.5).
///
/// Values with a prefix are never padded (`SC1234` stays as it is and fails
/// [`is_company_number`]), nor are empty values. The result still needs validating.
pub fn normalise_company_number(s: &str) -> String {
    let t = s.trim().to_ascii_uppercase();
    if (1..8).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()) {
        format!("{t:0>8}")
    } else {
        t
    }
}

/// HMRC tax code in canonical form (see [`is_tax_code`] for what is allowed).
static TAX_CODE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        r"[SC]?(?:",
        r"[1-9][0-9]{0,5}[LMNT]", // allowance + suffix: 1257L, S1257L, C1257M
        r"|K[1-9][0-9]{0,5}",     // K codes: K475, SK475, CK475
        r"|BR|0T|D[01]",          // BR, 0T, D0, D1 and their S/C forms (SBR, C0T, SD1...)
        r")",
        r"|SD2", // Scotland only
        r"|NT",  // no tax: UK-wide, never prefixed
        r")$",
    ))
    .expect("valid tax code regex")
});

/// Returns `true` if `s` is an HMRC PAYE tax code in canonical form: upper case, no spaces, and
/// **without** an emergency-basis marker (` W1`, `M1`, `X`): the basis (week 1/month 1,
/// non-cumulative) is a separate field of the canonical model (FPS `BasisNonCumulative`).
///
/// Allowed (from the FPS XSD pattern in canonical-model §2.2, brought up to date):
/// * an allowance code: 1–6 digits, not starting with `0`, then `L`, `M`, `N` or `T`
///   (`1257L`, `1383M`, `1131N`, `1257T`);
/// * a `K` code: `K` then 1–6 digits, not starting with `0` (`K475`);
/// * `BR`, `0T`, `D0`, `D1`, and `NT`;
/// * a Scottish `S` or Welsh `C` prefix on any of these except `NT` (`S1257L`, `CK475`, `SBR`,
///   `C0T`, `SD0`, `CD1`), plus the Scottish-only `SD2`.
///
/// Not allowed: the pre-2016 `P`, `V` and `Y` suffixes (the 2014-15 XSD still has `P` and `Y`),
/// `D2` without `S`, `SD3` (outside the set agreed for this format: add it here if Scottish
/// payroll data carries it), and any basis marker.
pub fn is_tax_code(s: &str) -> bool {
    TAX_CODE_RE.is_match(s)
}

/// Employer PAYE reference: 3-digit tax office number, `/`, 1–10 upper-case letters or digits.
static PAYE_REFERENCE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9]{3}/[A-Z0-9]{1,10}$").expect("valid PAYE reference regex"));

/// Returns `true` if `s` is an employer PAYE reference in canonical form: the 3-digit HMRC tax
/// office number, a `/`, then 1–10 upper-case letters or digits (`635/A635`, `123/AB456`; FPS
/// `OfficeNo` and `PayeRef`, canonical-model §2.2). No spaces, no lower case; the Accounts Office
/// reference (`635PC00000000`) is a different identifier and fails.
pub fn is_paye_reference(s: &str) -> bool {
    PAYE_REFERENCE_RE.is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` over a table of `(input, expected, why)` rows and reports every mismatch at
    /// once, so one failing row does not hide the others.
    fn run_table(name: &str, check: fn(&str) -> bool, cases: &[(&str, bool, &str)]) {
        let failures: Vec<String> = cases
            .iter()
            .filter(|(input, expected, _)| check(input) != *expected)
            .map(|(input, expected, why)| format!("  {input:?}: expected {expected} ({why})"))
            .collect();
        assert!(
            failures.is_empty(),
            "{name}: {} of {} cases wrong:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn nino_table() {
        // Note: uk-identifiers §3.1 asks for `QQ 12 34 56 C` in examples; it is deliberately
        // invalid (`Q` is never used), and it is tested below as such. `AB 12 34 56 C` belongs to
        // a real person and is not used here.
        let cases: &[(&str, bool, &str)] = &[
            // valid
            ("AB164231A", true, "real FPS sample value, passes per §3.1"),
            ("CE123456D", true, "suffix D"),
            ("JP000000A", true, "J and P allowed as letters"),
            ("ZY999999B", true, "Z first, Y second"),
            ("TW123456C", true, "T then W"),
            ("OA123456A", true, "O allowed first"),
            ("HN654321D", true, "N second allowed"),
            ("NB123456A", true, "NB is not a banned prefix"),
            ("CE999999C", true, "C first, not CR"),
            ("MA123456B", true, "M first, not MW"),
            // documented examples that must fail
            ("QQ123456C", false, "doc example: Q never used"),
            ("QQ 12 34 56 C", false, "doc example, spaced"),
            // forbidden letters in first/second position
            ("DA123456A", false, "D never first"),
            ("FA123456A", false, "F never first"),
            ("IA123456A", false, "I never first"),
            ("QA123456A", false, "Q never first"),
            ("UA123456A", false, "U never first"),
            ("VA123456A", false, "V never first"),
            ("AD123456A", false, "D never second"),
            ("AF123456A", false, "F never second"),
            ("AI123456A", false, "I never second"),
            ("AQ123456A", false, "Q never second"),
            ("AU123456A", false, "U never second"),
            ("AV123456A", false, "V never second"),
            ("AO123456A", false, "O never second"),
            // unused prefixes
            ("BG123456A", false, "prefix BG not used"),
            ("GB123456A", false, "prefix GB not used"),
            ("KN123456A", false, "prefix KN not used"),
            ("NK123456A", false, "prefix NK not used"),
            ("NT123456A", false, "prefix NT not used"),
            ("TN123456A", false, "prefix TN not used"),
            ("ZZ123456A", false, "prefix ZZ not used"),
            // administrative look-alikes
            ("OO123456A", false, "look-alike OO"),
            ("CR123456A", false, "look-alike CR"),
            ("FY123456A", false, "look-alike FY"),
            ("MW123456A", false, "look-alike MW"),
            ("NC123456A", false, "look-alike NC"),
            ("NC123456M", false, "stakeholder-pension dummy ending M"),
            ("NC123456F", false, "stakeholder-pension dummy ending F"),
            // Temporary Reference Numbers
            ("11A11111", false, "TRN canonical form"),
            ("11 A1 11 11", false, "TRN display form"),
            ("11A111111", false, "TRN-like, 9 chars"),
            // suffix
            ("AB164231E", false, "suffix E not allowed"),
            ("AB164231Z", false, "suffix Z not allowed"),
            ("AB164231", false, "missing suffix"),
            ("AB164231 ", false, "RTI space suffix not canonical"),
            // shape and normalisation
            ("ab164231a", false, "lower case"),
            ("Ab164231A", false, "mixed case"),
            ("AB 16 42 31 A", false, "spaced"),
            ("AB-16-42-31-A", false, "punctuated"),
            (" AB164231A", false, "leading space"),
            ("AB164231A ", false, "trailing space"),
            ("AB164231A\n", false, "trailing newline"),
            ("AB1642311A", false, "seven digits"),
            ("AB16423A", false, "five digits"),
            ("A1164231A", false, "digit in prefix"),
            ("AB16423XA", false, "letter among digits"),
            ("AB١٦٤٢٣١A", false, "non-ASCII digits"),
            ("", false, "empty"),
        ];
        run_table("is_nino", is_nino, cases);
    }

    #[test]
    fn sort_code_table() {
        let cases: &[(&str, bool, &str)] = &[
            // valid
            ("123456", true, "six digits"),
            ("000000", true, "all zeros"),
            ("999999", true, "all nines"),
            ("089999", true, "leading zero kept"),
            // invalid
            ("12-34-56", false, "hyphenated display form"),
            ("12 34 56", false, "spaced"),
            ("12345", false, "five digits"),
            ("1234567", false, "seven digits"),
            ("12345a", false, "letter"),
            ("ABCDEF", false, "letters"),
            (" 123456", false, "leading space"),
            ("123456 ", false, "trailing space"),
            ("+12345", false, "sign"),
            ("١٢٣٤٥٦", false, "non-ASCII digits"),
            ("１２３４５６", false, "full-width digits"),
            ("", false, "empty"),
        ];
        run_table("is_sort_code", is_sort_code, cases);
    }

    #[test]
    fn postcode_table() {
        let cases: &[(&str, bool, &str)] = &[
            // documented examples, one per outward shape
            ("M1 1AA", true, "AN"),
            ("M60 1NW", true, "ANN"),
            ("CR2 6XH", true, "AAN"),
            ("DN55 1PT", true, "AANN"),
            ("W1A 1HQ", true, "ANA"),
            ("EC1A 1BB", true, "AANA"),
            ("GIR 0AA", true, "Girobank special case"),
            // boundary letters that are allowed
            ("B33 8TH", true, "B first"),
            ("SW1A 2AA", true, "AANA with A"),
            ("SE1P 5ZZ", true, "4th position P"),
            ("E1W 1AA", true, "3rd position W"),
            ("N1C 4AG", true, "3rd position C"),
            ("LS1 1UR", true, "AAN"),
            ("YO10 5DD", true, "Y first, O second"),
            ("ZE1 0AB", true, "Z first"),
            // 1st position: Q V X never
            ("Q1 1AA", false, "Q first"),
            ("V1 1AA", false, "V first"),
            ("X1 1AA", false, "X first"),
            // 2nd position: I J Z never
            ("AI1 1AA", false, "I second"),
            ("AJ1 1AA", false, "J second"),
            ("AZ1 1AA", false, "Z second"),
            // 3rd position (ANA) letters
            ("W1I 1AA", false, "I in 3rd position"),
            ("W1L 1AA", false, "L in 3rd position"),
            ("W1M 1AA", false, "M in 3rd position"),
            ("W1Z 1AA", false, "Z in 3rd position"),
            // 4th position (AANA) letters
            ("EC1C 1BB", false, "C in 4th position"),
            ("EC1D 1BB", false, "D in 4th position"),
            ("EC1Z 1BB", false, "Z in 4th position"),
            // inward letters: never C I K M O V
            ("M1 1CA", false, "inward C"),
            ("M1 1AI", false, "inward I"),
            ("M1 1KA", false, "inward K"),
            ("M1 1AM", false, "inward M"),
            ("M1 1OA", false, "inward O"),
            ("M1 1AV", false, "inward V"),
            // shape
            ("M1 AAA", false, "inward must start with a digit"),
            ("M1 11A", false, "inward needs two letters"),
            ("M1 1A", false, "inward too short"),
            ("M1 1AAA", false, "inward too long"),
            ("1M 1AA", false, "outward starts with a digit"),
            ("ABC1 1AA", false, "three outward letters"),
            ("M123 1AA", false, "three outward digits"),
            ("EC1AA 1BB", false, "outward too long"),
            // normalisation
            ("m1 1aa", false, "lower case"),
            ("ec1a 1bb", false, "lower case"),
            ("Ec1A 1BB", false, "mixed case"),
            ("gir 0aa", false, "GIR in lower case"),
            ("M11AA", false, "missing space"),
            ("EC1A1BB", false, "missing space"),
            ("GIR0AA", false, "GIR missing space"),
            ("M1  1AA", false, "double space"),
            (" M1 1AA", false, "leading space"),
            ("M1 1AA ", false, "trailing space"),
            ("M1\t1AA", false, "tab instead of space"),
            ("M1-1AA", false, "hyphen instead of space"),
            ("M1 1AA\n", false, "trailing newline"),
            // out of scope or junk
            ("BFPO 1234", false, "BFPO is not accepted here"),
            ("GIR 0AB", false, "only GIR 0AA is special"),
            ("", false, "empty"),
        ];
        run_table("is_uk_postcode", is_uk_postcode, cases);
    }

    /// Appends the check digits of a standard VAT number to its first seven digits, following
    /// uk-identifiers §3.4 literally (subtract 97 until negative), independently of the modulo
    /// arithmetic in [`vat_check_digits_pass`]. `offset` is 0 for the 97 series and 55 for the
    /// 9755 series.
    fn vat_with_check(base7: &str, offset: i32) -> String {
        assert_eq!(base7.len(), 7);
        let mut r: i32 = base7
            .bytes()
            .zip([8, 7, 6, 5, 4, 3, 2])
            .map(|(b, w)| i32::from(b - b'0') * w)
            .sum::<i32>()
            + offset;
        while r >= 0 {
            r -= 97;
        }
        format!("{base7}{:02}", -r)
    }

    /// `s` with the digit at `i` changed by +1 (9 becomes 0). For a standard VAT number this
    /// always breaks the check digits in both series: the total moves by `w` or `-9w` (w = 2..8),
    /// or the check digits by 1, -9, 10 or -90, and none of these is 0, 42 or 55 modulo 97, the
    /// differences that would land on a series again.
    fn alter_digit(s: &str, i: usize) -> String {
        let mut b = s.as_bytes().to_vec();
        b[i] = b'0' + (b[i] - b'0' + 1) % 10;
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn vat_check_digit_helper_matches_hand_computation() {
        // 1234567: 1×8 + 2×7 + 3×6 + 4×5 + 5×4 + 6×3 + 7×2 = 8+14+18+20+20+18+14 = 112.
        // 97 series: 112 − 97 = 15, 15 − 97 = −82 → 82.
        assert_eq!(vat_with_check("1234567", 0), "123456782");
        // 9755 series: 112 + 55 = 167, 167 − 97 = 70, 70 − 97 = −27 → 27.
        assert_eq!(vat_with_check("1234567", 55), "123456727");
        // The §3.4 worked example: 8314958 → 178 → 81 → −16.
        assert_eq!(vat_with_check("8314958", 0), "831495816");
        // Isle of Man: 0012345 → 1×6 + 2×5 + 3×4 + 4×3 + 5×2 = 50 → −47.
        assert_eq!(vat_with_check("0012345", 0), "001234547");
    }

    #[test]
    fn vat_number_table() {
        let fixed: &[(&str, bool, &str)] = &[
            // valid: the §3.4 worked example in every accepted shape
            ("831495816", true, "doc example 831 4958 16, canonical"),
            ("GB831495816", true, "doc example with GB prefix"),
            ("831495816001", true, "branch trader: 3-digit suffix"),
            ("GB831495816999", true, "branch trader with GB prefix"),
            ("831495816000", true, "branch suffix 000"),
            // valid: government departments and health authorities
            ("GD000", true, "GD lower bound"),
            ("GD499", true, "GD upper bound"),
            ("GBGD123", true, "GD with GB prefix"),
            ("HA500", true, "HA lower bound"),
            ("HA999", true, "HA upper bound"),
            ("GBHA750", true, "HA with GB prefix"),
            // invalid: the worked example altered or re-shaped
            ("831495817", false, "check units digit altered"),
            ("831495826", false, "check tens digit altered"),
            ("831495916", false, "body digit altered"),
            ("831495816 ", false, "trailing space"),
            ("831 4958 16", false, "display form with spaces"),
            (
                "GB 831 4958 16",
                false,
                "display form with prefix and spaces",
            ),
            ("GB 831495816", false, "space after prefix"),
            ("831-4958-16", false, "hyphenated"),
            ("gb831495816", false, "lower-case prefix"),
            ("Gb831495816", false, "mixed-case prefix"),
            ("GBGB831495816", false, "double prefix"),
            ("XI831495816", false, "XI prefix not accepted"),
            ("EU831495816", false, "other prefix"),
            ("83149581", false, "8 digits"),
            ("8314958160", false, "10 digits"),
            ("83149581600", false, "11 digits"),
            ("8314958160010", false, "13 digits"),
            ("831495817001", false, "branch form with a bad check digit"),
            ("83149581600A", false, "letter in branch suffix"),
            ("83149581A", false, "letter in check digits"),
            ("８３１４９５８１６", false, "full-width digits"),
            // invalid: the 9755 series read as "subtract 55" (§3.4's wording)
            (
                "831495871",
                false,
                "178 − 55 → −71: passes neither real series",
            ),
            (
                "123456740",
                false,
                "112 − 55 → −40: passes neither real series",
            ),
            // invalid: check digits that can never occur
            ("000000000", false, "all zeros: check 00 never occurs"),
            ("000000000000", false, "all zeros, branch form"),
            ("123456700", false, "check digits 00"),
            ("123456799", false, "check digits 99"),
            // invalid: GD/HA look-alikes
            (
                "GD500",
                false,
                "GD above 499 is not a government department",
            ),
            ("HA499", false, "HA below 500 is not a health authority"),
            ("GBGD500", false, "GD above 499 with prefix"),
            ("GBHA000", false, "HA below 500 with prefix"),
            ("GD49", false, "GD with two digits"),
            ("GD0001", false, "GD with four digits"),
            ("HA1000", false, "HA with four digits"),
            ("gd001", false, "lower case gd"),
            ("GD 001", false, "spaced GD"),
            ("GDABC", false, "GD with letters"),
            ("GD888800101", false, "EU-style GD form not accepted"),
            ("HD500", false, "unknown letters"),
            ("GB", false, "prefix only"),
            ("", false, "empty"),
        ];
        // Constructed numbers: valid ones from the check-digit helper, and, for each, every
        // single-digit alteration of its first nine digits as an invalid one.
        let mut constructed: Vec<(String, bool, &str)> = Vec::new();
        let bases = [
            ("1234567", 0, "97 series, constructed"),
            ("1234567", 55, "9755 series, constructed"),
            ("7654321", 0, "97 series, constructed"),
            ("7654321", 55, "9755 series, constructed"),
            ("9999999", 0, "97 series, all nines"),
            ("9999999", 55, "9755 series, all nines"),
            ("1000000", 55, "9755 series, constructed"),
            ("0012345", 0, "Isle of Man (starts 00), 97 series"),
        ];
        for (base, offset, why) in bases {
            let number = vat_with_check(base, offset);
            constructed.push((format!("GB{number}"), true, "constructed, with GB prefix"));
            constructed.push((format!("{number}123"), true, "constructed, branch suffix"));
            for i in 0..9 {
                constructed.push((
                    alter_digit(&number, i),
                    false,
                    "constructed, one digit altered",
                ));
            }
            constructed.push((number, true, why));
        }
        let cases: Vec<(&str, bool, &str)> = fixed
            .iter()
            .copied()
            .chain(constructed.iter().map(|(s, b, why)| (s.as_str(), *b, *why)))
            .collect();
        run_table("is_vat_number", is_vat_number, &cases);
    }

    #[test]
    fn company_number_table() {
        let cases: &[(&str, bool, &str)] = &[
            // valid: §3.5 examples and one per prefix family
            ("06327334", true, "England & Wales, 8 digits"),
            ("00445790", true, "§3.5 padded example"),
            ("01332249", true, "§3.5 real-data example after padding"),
            ("SC119718", true, "Scotland"),
            ("NI018971", true, "Northern Ireland"),
            ("NI01897A", true, "Northern Ireland, A suffix"),
            ("OC301234", true, "LLP, England & Wales"),
            ("SO301234", true, "LLP, Scotland"),
            ("NC001234", true, "LLP, Northern Ireland"),
            ("LP012345", true, "limited partnership"),
            ("SL012345", true, "limited partnership, Scotland"),
            ("FC012345", true, "overseas company"),
            ("SF001234", true, "overseas company, Scotland"),
            ("NF001234", true, "overseas company, Northern Ireland"),
            ("R0000123", true, "R0 prefix"),
            ("SE000123", true, "SE prefix"),
            ("SC11971C", true, "C in last position"),
            ("RS123456", true, "registered society, digits"),
            ("RS12345R", true, "RS with letter suffix"),
            ("RS1234IP", true, "RS with IP suffix"),
            ("RS123CUS", true, "RS with CUS suffix"),
            ("OC1234OC", true, "OC with OC suffix"),
            ("OCP1234C", true, "OC with P digits"),
            // invalid: the unanchored-regex look-alikes of §3.5
            (
                "0632733499",
                false,
                "10 digits: passed the unanchored regex",
            ),
            (
                "SC119718X",
                false,
                "trailing letter: passed the unanchored regex",
            ),
            // invalid: not normalised
            ("1332249", false, "leading zero dropped: normalise first"),
            ("6327334", false, "7 digits"),
            ("445790", false, "6 digits"),
            ("sc119718", false, "lower case"),
            ("Sc119718", false, "mixed case"),
            ("SC 119718", false, "spaced"),
            (" SC119718", false, "leading space"),
            ("SC119718 ", false, "trailing space"),
            ("06327334\n", false, "trailing newline"),
            ("06-327334", false, "punctuated"),
            // invalid: shape and prefixes
            ("SC12345", false, "prefix with 5 digits"),
            ("SC1197189", false, "prefix with 7 digits"),
            ("063273345", false, "9 digits"),
            ("XX123456", false, "unknown prefix"),
            ("AB123456", false, "unknown prefix AB"),
            ("S1234567", false, "single-letter prefix"),
            (
                "IP012345",
                false,
                "IP: named in §3.5 prose, absent from its regex",
            ),
            (
                "SP012345",
                false,
                "SP: named in §3.5 prose, absent from its regex",
            ),
            ("RC000123", false, "RC: not in the §3.5 regex"),
            ("SC11971X", false, "bad last letter"),
            ("٠٦٣٢٧٣٣٤", false, "non-ASCII digits"),
            ("", false, "empty"),
        ];
        run_table("is_company_number", is_company_number, cases);
    }

    #[test]
    fn normalise_company_number_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "1332249",
                "01332249",
                "§3.5 real-data example: Excel dropped the zero",
            ),
            ("445790", "00445790", "two zeros dropped"),
            ("1", "00000001", "one digit"),
            ("06327334", "06327334", "already canonical"),
            (" 1332249 ", "01332249", "surrounding whitespace"),
            ("sc119718", "SC119718", "upper-cased"),
            ("SC1234", "SC1234", "prefixed values are never padded"),
            (
                "0632733499",
                "0632733499",
                "too long: left alone, fails validation",
            ),
            ("13322-49", "13322-49", "not purely numeric: left alone"),
            ("", "", "empty stays empty"),
            ("   ", "", "blank becomes empty, not zeros"),
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter(|(input, expected, _)| normalise_company_number(input) != *expected)
            .map(|(input, expected, why)| {
                format!(
                    "  {input:?}: expected {expected:?}, got {:?} ({why})",
                    normalise_company_number(input)
                )
            })
            .collect();
        assert!(
            failures.is_empty(),
            "normalise_company_number:\n{}",
            failures.join("\n")
        );
        assert!(is_company_number(&normalise_company_number("1332249")));
    }

    #[test]
    fn tax_code_table() {
        let cases: &[(&str, bool, &str)] = &[
            // valid: allowance codes
            ("1257L", true, "standard personal allowance"),
            ("1383M", true, "marriage allowance received"),
            ("1131N", true, "marriage allowance transferred"),
            ("1257T", true, "T suffix"),
            ("1L", true, "one digit"),
            ("999999L", true, "six digits"),
            ("S1257L", true, "Scottish"),
            ("C1257L", true, "Welsh"),
            ("S1383M", true, "Scottish M"),
            ("C1257T", true, "Welsh T"),
            // valid: K codes
            ("K475", true, "K code"),
            ("K1", true, "K one digit"),
            ("K999999", true, "K six digits"),
            ("SK475", true, "Scottish K"),
            ("CK475", true, "Welsh K"),
            // valid: special codes
            ("BR", true, "basic rate"),
            ("0T", true, "no allowance"),
            ("NT", true, "no tax"),
            ("D0", true, "higher rate"),
            ("D1", true, "additional rate"),
            ("SBR", true, "Scottish basic rate"),
            ("CBR", true, "Welsh basic rate"),
            ("S0T", true, "Scottish 0T"),
            ("C0T", true, "Welsh 0T"),
            ("SD0", true, "Scottish intermediate"),
            ("SD1", true, "Scottish higher"),
            ("SD2", true, "Scottish D2"),
            ("CD0", true, "Welsh D0"),
            ("CD1", true, "Welsh D1"),
            // invalid: emergency basis markers (basis is a separate field)
            ("1257L W1", false, "week 1 marker, spaced"),
            ("1257LW1", false, "week 1 marker"),
            ("1257L M1", false, "month 1 marker, spaced"),
            ("1257LM1", false, "month 1 marker"),
            ("1257LX", false, "X marker"),
            ("1257L X", false, "X marker, spaced"),
            ("S1257L W1", false, "Scottish with week 1 marker"),
            ("BR W1", false, "BR with week 1 marker"),
            ("K475 M1", false, "K with month 1 marker"),
            // invalid: retired or unknown suffixes and codes
            (
                "1257P",
                false,
                "P suffix retired 2016 (still in the 2014-15 XSD)",
            ),
            (
                "1257Y",
                false,
                "Y suffix retired 2016 (still in the 2014-15 XSD)",
            ),
            ("1257V", false, "V suffix retired"),
            ("1257K", false, "K is a prefix, not a suffix"),
            ("1257", false, "no suffix"),
            ("D2", false, "D2 only exists in Scotland"),
            ("CD2", false, "no Welsh D2"),
            ("SD3", false, "outside the agreed set (see the doc comment)"),
            ("D3", false, "no D3"),
            ("SNT", false, "NT is never prefixed"),
            ("CNT", false, "NT is never prefixed"),
            ("XBR", false, "unknown prefix"),
            ("SS1257L", false, "double prefix"),
            ("CS1257L", false, "two prefixes"),
            ("0L", false, "allowance starting with zero"),
            ("01257L", false, "leading zero"),
            ("1234567L", false, "seven digits"),
            ("K0", false, "K zero"),
            ("K0475", false, "K with leading zero"),
            ("K1234567", false, "K seven digits"),
            ("L", false, "suffix only"),
            ("K", false, "K only"),
            ("S", false, "prefix only"),
            // invalid: normalisation
            ("1257l", false, "lower case"),
            ("s1257L", false, "lower-case prefix"),
            ("br", false, "lower case BR"),
            ("1257 L", false, "spaced"),
            (" 1257L", false, "leading space"),
            ("1257L ", false, "trailing space"),
            ("1257L\n", false, "trailing newline"),
            ("", false, "empty"),
        ];
        run_table("is_tax_code", is_tax_code, cases);
    }

    #[test]
    fn paye_reference_table() {
        let cases: &[(&str, bool, &str)] = &[
            // valid
            ("635/A635", true, "FPS sample OfficeNo 635, PayeRef A635"),
            ("123/AB456", true, "brief example"),
            ("000/1", true, "one character after the slash"),
            ("999/ABCDEFGHIJ", true, "ten characters after the slash"),
            ("120/1234567890", true, "digits only after the slash"),
            // invalid
            ("635/a635", false, "lower case"),
            ("635A635", false, "no slash"),
            ("635 A635", false, "space instead of slash"),
            ("635 / A635", false, "spaced slash"),
            ("635/ A635", false, "space after slash"),
            ("635/A 635", false, "space inside"),
            ("635\\A635", false, "backslash"),
            ("635-A635", false, "hyphen instead of slash"),
            ("63/A635", false, "two-digit office number"),
            ("6355/A635", false, "four-digit office number"),
            ("ABC/A635", false, "letters in office number"),
            ("635/", false, "nothing after the slash"),
            ("/A635", false, "no office number"),
            ("635//A635", false, "double slash"),
            ("635/A635/1", false, "second slash"),
            (
                "635/ABCDEFGHIJK",
                false,
                "eleven characters after the slash",
            ),
            ("635/A-635", false, "punctuation after the slash"),
            (
                "635PC00000000",
                false,
                "Accounts Office reference, not a PAYE reference",
            ),
            (" 635/A635", false, "leading space"),
            ("635/A635 ", false, "trailing space"),
            ("", false, "empty"),
        ];
        run_table("is_paye_reference", is_paye_reference, cases);
    }
}
