//! Format checks for UK identifiers used as custom JSON Schema formats in the canonical model.
//!
//! Every check here works on the **canonical** form of a value only: the mapping layer is
//! expected to normalise input first (strip spaces and punctuation, upper-case, single space in a
//! postcode). A value in any other form — lower case, spaced, padded — is rejected, so a record
//! that skipped normalisation fails validation instead of slipping through.
//!
//! The rules come from `shared/design/uk-identifiers.md` (§3.1 NINO, §3.2 sort code, §3.3
//! postcode). These are *format* checks: a value that passes is well-formed, not known to exist.
//! A NINO must never be used to verify identity.
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
}
