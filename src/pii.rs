//! Masking of personal data for anything a person or a log sees.
//!
//! Which values are personal is decided by the canonical schemas (`x-pii`), not here: this
//! module only knows how to hide a value once a caller has said it must be hidden.

/// How sensitive a value is, from the `x-pii` keyword of a canonical schema property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PiiClass {
    /// Identifies a person: names, NI number, date of birth, address, contact details.
    Personal,
    /// Money or bank details of a person: pay, sort code, account number.
    Financial,
    /// UK GDPR special-category data: health (sickness absence), ethnicity, religion...
    SpecialCategory,
}

impl PiiClass {
    /// Parses the value of an `x-pii` schema keyword.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "personal" => Some(Self::Personal),
            "financial" => Some(Self::Financial),
            "special-category" => Some(Self::SpecialCategory),
            _ => None,
        }
    }
}

/// Masks a value for display: nothing of it is shown but its length class, so a mask cannot be
/// reversed by guessing from a known prefix. Empty values stay empty, so "missing" stays visible.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    match n {
        0 => String::new(),
        1..=4 => "****".to_string(),
        _ => format!("****({n} chars)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_every_character() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("AB"), "****");
        let m = mask("JX123456A");
        assert!(
            !m.contains("JX") && !m.contains("123") && !m.contains('A'),
            "{m}"
        );
        assert_eq!(m, "****(9 chars)");
    }

    #[test]
    fn parses_schema_classes() {
        assert_eq!(PiiClass::parse("personal"), Some(PiiClass::Personal));
        assert_eq!(PiiClass::parse("financial"), Some(PiiClass::Financial));
        assert_eq!(
            PiiClass::parse("special-category"),
            Some(PiiClass::SpecialCategory)
        );
        assert_eq!(PiiClass::parse("public"), None);
    }
}
