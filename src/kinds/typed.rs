//! The typed keywords of subscribe messages and of the category templates added since 2023: a
//! key is a type and a number (`thing1`, `character_string12`), and WeChat refuses (47003) a
//! value that breaks its type's rule. The rules are checked here, before any quota is spent;
//! an app that asks for it has over-long `thing` and `character_string` values shortened here
//! instead.

use super::fields::{Data, FieldError};

/// The keyword types, longest prefix first so `character_string` is not read as `char…`.
const TYPES: [&str; 14] = [
    "character_string",
    "phone_number",
    "car_number",
    "number",
    "letter",
    "symbol",
    "phrase",
    "amount",
    "thing",
    "const",
    "time",
    "date",
    "name",
    "enum",
];

/// The rule a keyword's value broke, in the words a rejection gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeywordError {
    /// The key names no keyword type.
    #[error("key must be a keyword type and a number, such as thing1 (types: {})", TYPES.join(", "))]
    UnknownType,
    /// The value breaks the rule of its key's type.
    #[error("{}", rule(.0))]
    Broken(&'static str),
}

/// Longest `thing` value, in characters.
const THING_MAX_CHARS: usize = 20;
/// Longest `character_string` value, in characters.
const CHARACTER_STRING_MAX_CHARS: usize = 32;
/// What ends a shortened `thing`: its first 17 characters and "…", the binding rule of
/// `apps.NAME.truncate` (WxJava cuts the same 17 characters).
const THING_END: &str = "…";
/// What ends a shortened `character_string`: three ASCII dots, since that type allows only
/// ASCII and "…" (U+2026) would break the very rule the shortening keeps.
const CHARACTER_STRING_END: &str = "...";

/// Which `data` keys a kind holds to a keyword type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Every key must name a type (the subscribe kinds).
    Every,
    /// Only keys written as a type and a number (`thing13`, the category templates); any other
    /// key (an older template's `first`, `keyword1`, `remark`) is not checked.
    Named,
}

/// Checks the typed entries of `data` (which ones, `keys` says); the error names the field and
/// the rule. With `truncate`, an over-long `thing` or `character_string` value is first
/// shortened in place, and a warning says so.
pub(crate) fn check_data(
    data: &mut Data,
    keys: Keys,
    truncate: bool,
    warnings: &mut Vec<String>,
) -> Result<(), FieldError> {
    for (key, entry) in &mut data.0 {
        let key = key.as_str();
        let field = || format!("data.{key}.value");
        let Some(kind) = type_of(key) else {
            if keys == Keys::Every {
                return Err(FieldError::new(
                    field(),
                    KeywordError::UnknownType.to_string(),
                ));
            }
            continue;
        };
        if truncate && let Some(short) = shorten(kind, &entry.value) {
            warnings.push(format!(
                "{}: shortened from {} to {} characters ({}; apps.NAME.truncate is on)",
                field(),
                entry.value.chars().count(),
                short.chars().count(),
                rule(kind)
            ));
            entry.value = short;
        }
        check(key, &entry.value).map_err(|e| FieldError::new(field(), e.to_string()))?;
    }
    Ok(())
}

/// How a type that may be shortened to fit is cut: its longest value, how many characters are
/// kept, and what ends them.
fn shortenable(kind: &str) -> Option<(usize, usize, &'static str)> {
    match kind {
        "thing" => Some((THING_MAX_CHARS, 17, THING_END)),
        "character_string" => Some((
            CHARACTER_STRING_MAX_CHARS,
            CHARACTER_STRING_MAX_CHARS - CHARACTER_STRING_END.len(),
            CHARACTER_STRING_END,
        )),
        _ => None,
    }
}

/// A value over its type's length, cut as WxJava cuts it: its first characters and
/// its end: 17 and "…" for a `thing`, 29 and "..." for a `character_string`. Counted in
/// characters, so Chinese text is cut between characters. `None` when it fits or its type is
/// not one that is shortened.
fn shorten(kind: &str, value: &str) -> Option<String> {
    let (max, kept, end) = shortenable(kind)?;
    if value.chars().count() <= max {
        return None;
    }
    Some(value.chars().take(kept).chain(end.chars()).collect())
}

/// Checks one value against the type its key names; the error is the rule it broke.
pub(crate) fn check(key: &str, value: &str) -> Result<(), KeywordError> {
    let Some(kind) = type_of(key) else {
        return Err(KeywordError::UnknownType);
    };
    let n = value.chars().count();
    let ok = match kind {
        "thing" => n <= THING_MAX_CHARS,
        "number" => n <= 32 && is_number(value),
        "letter" => (1..=32).contains(&n) && value.chars().all(|c| c.is_ascii_alphabetic()),
        "symbol" => (1..=5).contains(&n) && value.chars().all(is_symbol),
        "character_string" => {
            (1..=CHARACTER_STRING_MAX_CHARS).contains(&n)
                && value.chars().all(|c| c.is_ascii_graphic())
        }
        "time" => is_time_or_range(value, true),
        "date" => is_time_or_range(value, false),
        "amount" => is_amount(value),
        "phone_number" => {
            (1..=17).contains(&n)
                && value.chars().any(|c| c.is_ascii_digit())
                && value
                    .chars()
                    .all(|c| c.is_ascii_digit() || is_symbol(c) || c == ' ')
        }
        "car_number" => is_car_number(value),
        "name" => is_name(value),
        "phrase" => (1..=5).contains(&n) && value.chars().all(is_han),
        "const" => n <= 20,
        // Enumerated values are checked by WeChat against the template's own list.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(KeywordError::Broken(kind))
    }
}

fn rule(kind: &str) -> &'static str {
    match kind {
        "thing" => "thing: at most 20 characters",
        "number" => "number: at most 32 characters of digits, with an optional decimal part",
        "letter" => "letter: 1-32 letters A-Z a-z",
        "symbol" => "symbol: 1-5 symbols",
        "character_string" => "character_string: 1-32 characters of digits, letters and symbols",
        "time" => "time: a 24-hour time such as 15:01, optionally after a date, or two joined by ~",
        "date" => {
            "date: a date such as 2019年10月1日 or 2019-10-01, optionally with a 24-hour time, or two joined by ~"
        }
        "amount" => {
            "amount: an optional currency sign, at most 10 digits, optional decimals, optionally ending in 元"
        }
        "phone_number" => "phone_number: at most 17 digits and symbols",
        "car_number" => {
            "car_number: at most 8 characters, letters and digits, the first and last may be Chinese"
        }
        "name" => "name: at most 10 Chinese characters, or at most 20 letters and symbols",
        "phrase" => "phrase: 1-5 Chinese characters",
        "const" => "const: at most 20 characters",
        _ => "breaks its type's rule",
    }
}

/// The keyword type of a key: a known type followed by one or more digits.
fn type_of(key: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| {
        key.strip_prefix(t)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2EBEF}')
}

/// A symbol: printable, neither a letter, a digit, a Chinese character nor white space.
fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

fn is_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_amount(s: &str) -> bool {
    let s = s.strip_suffix('元').unwrap_or(s);
    let mut chars = s.chars();
    let s = match chars.next() {
        Some(c) if "¥￥$€£₩₹".contains(c) => chars.as_str(),
        _ => s,
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    (1..=10).contains(&int.len())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_car_number(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    (1..=8).contains(&n)
        && chars
            .iter()
            .enumerate()
            .all(|(i, &c)| c.is_ascii_alphanumeric() || ((i == 0 || i == n - 1) && is_han(c)))
}

fn is_name(s: &str) -> bool {
    let n = s.chars().count();
    if n == 0 || s.chars().any(|c| c.is_ascii_digit()) {
        return false;
    }
    if s.chars().any(is_han) {
        // Chinese, or Chinese mixed with letters, counts as a Chinese name.
        n <= 10
            && s.chars()
                .all(|c| is_han(c) || c.is_ascii_alphabetic() || is_symbol(c) || c == ' ')
    } else {
        n <= 20
            && s.chars()
                .all(|c| c.is_ascii_alphabetic() || is_symbol(c) || c == ' ')
    }
}

/// One time or date, or two joined by `~`.
fn is_time_or_range(s: &str, time_required: bool) -> bool {
    let mut parts = s.split('~');
    let (Some(a), b, None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let one = |p: &str| is_moment(p.trim(), time_required);
    one(a) && b.is_none_or(one)
}

/// `[date] time` for a time keyword (`time_required`), `date [time]` for a date keyword.
fn is_moment(s: &str, time_required: bool) -> bool {
    let (date, time) = match s.rsplit_once(' ') {
        Some((d, t)) => (Some(d.trim()), Some(t)),
        None if is_clock(s) => (None, Some(s)),
        None => (Some(s), None),
    };
    // `2019年10月1日15:01` has no space between the date and the time.
    let (date, time) = match (date, time) {
        (Some(d), None) if !time_required => match d.split_once('日') {
            Some((day, t)) if !t.is_empty() => (Some(format!("{day}日")), Some(t)),
            _ => (Some(d.to_owned()), None),
        },
        (d, t) => (d.map(str::to_owned), t),
    };
    let date_ok = date.as_deref().is_none_or(is_date);
    let time_ok = time.is_none_or(is_clock);
    if time_required {
        time.is_some() && date_ok && time_ok
    } else {
        date.is_some() && date_ok && time_ok
    }
}

/// `HH:MM` or `HH:MM:SS`, 24-hour.
fn is_clock(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return false;
    }
    let num = |p: &str, max: u32| {
        (1..=2).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| v <= max)
    };
    num(parts[0], 23) && parts[1..].iter().all(|p| p.len() == 2 && num(p, 59))
}

/// `2019年10月1日`, `2019-10-01`, `2019/10/01` or `2019.10.01`.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = if let Some(rest) = s.strip_suffix('日') {
        rest.split(['年', '月']).collect()
    } else {
        s.split(['-', '/', '.']).collect()
    };
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    let num = |p: &str, lo: u32, hi: u32, len: std::ops::RangeInclusive<usize>| {
        len.contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v))
    };
    num(y, 1, 9999, 4..=4) && num(m, 1, 12, 1..=2) && num(d, 1, 31, 1..=2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_accepts_what_wechat_accepts_and_refuses_the_rest() {
        let table: &[(&str, &str, bool)] = &[
            ("thing1", "您的餐品已备好", true),
            ("thing1", &"字".repeat(20), true),
            ("thing1", &"字".repeat(21), false),
            ("number2", "260", true),
            ("number2", "260.50", true),
            ("number2", "26a", false),
            ("number2", "1.", false),
            ("number2", &"9".repeat(33), false),
            ("letter3", "abcXYZ", true),
            ("letter3", "abc1", false),
            ("symbol4", "+-*", true),
            ("symbol4", "+-*/%^", false),
            ("symbol4", "a", false),
            ("character_string5", "SF1234-56_x", true),
            ("character_string5", "单号1", false),
            ("character_string5", &"x".repeat(33), false),
            ("time6", "15:01", true),
            ("time6", "2019年10月1日 15:01", true),
            ("time6", "2019-10-01 15:01:30", true),
            ("time6", "15:01~17:30", true),
            ("time6", "25:00", false),
            ("time6", "tomorrow", false),
            ("time6", "2019年10月1日", false),
            ("date7", "2019年10月1日", true),
            ("date7", "2019-10-01", true),
            ("date7", "2019年10月1日 15:01", true),
            ("date7", "2019年10月1日~2019年10月3日", true),
            ("date7", "2019-13-01", false),
            ("date7", "15:01", false),
            ("date7", "soon", false),
            ("amount8", "¥260.00", true),
            ("amount8", "260元", true),
            ("amount8", "$12", true),
            ("amount8", "12345678901", false),
            ("amount8", "about 5", false),
            ("phone_number9", "+86-0766-66888866", true),
            ("phone_number9", "+86-0766-668888661", false),
            ("phone_number9", "call me", false),
            ("car_number10", "粤A8Z888挂", true),
            ("car_number10", "粤A8Z88888挂", false),
            ("car_number10", "A粤8Z888", false),
            ("name11", "黄先生", true),
            ("name11", "John Smith", true),
            ("name11", &"黄".repeat(11), false),
            ("name11", &"a".repeat(21), false),
            ("name11", "R2D2", false),
            ("phrase12", "配送中", true),
            ("phrase12", "货物配送中", true),
            ("phrase12", "货物正在配送中", false),
            ("phrase12", "ok", false),
            ("const13", "已支付", true),
            ("enum14", "anything", true),
        ];
        for &(key, value, ok) in table {
            assert_eq!(check(key, value).is_ok(), ok, "{key} = {value:?}");
        }
    }

    #[test]
    fn a_key_must_be_a_known_type_and_a_number() {
        for key in ["thing", "keyword1", "first", "thing1a", "char1"] {
            let rule = check(key, "x").unwrap_err();
            assert_eq!(rule, KeywordError::UnknownType, "{key}");
            assert!(rule.to_string().contains("keyword type"), "{key}: {rule}");
        }
        assert!(check("character_string1", "abc").is_ok());
    }

    fn data(entries: &[(&str, &str)]) -> Data {
        Data(
            entries
                .iter()
                .map(|&(k, v)| {
                    (
                        k.to_owned(),
                        super::super::fields::DataEntry {
                            value: v.to_owned(),
                            color: None,
                        },
                    )
                })
                .collect(),
        )
    }

    /// Checks `entries` as `keys` says; the data as sent (or the breach) and the warnings.
    fn checked(
        entries: &[(&str, &str)],
        keys: Keys,
        truncate: bool,
    ) -> (Result<Data, FieldError>, Vec<String>) {
        let mut d = data(entries);
        let mut warnings = Vec::new();
        let result = check_data(&mut d, keys, truncate, &mut warnings).map(|()| d);
        (result, warnings)
    }

    #[test]
    fn a_breach_names_the_field_and_the_rule() {
        for keys in [Keys::Every, Keys::Named] {
            let err = checked(&[("thing3", "x".repeat(21).as_str())], keys, false)
                .0
                .unwrap_err();
            assert_eq!(err.field, "data.thing3.value");
            assert!(err.rule.contains("20 characters"), "{}", err.rule);
        }
    }

    #[test]
    fn named_keys_leave_every_key_that_is_not_a_type_and_a_number_unchecked() {
        let long = "字".repeat(40);
        let free = [
            ("first", long.as_str()),
            ("keyword1", long.as_str()),
            ("remark", long.as_str()),
            ("thing", long.as_str()),
            ("short_thing5", long.as_str()),
            ("Thing1", long.as_str()),
            ("User", long.as_str()),
        ];
        let (result, warnings) = checked(&free, Keys::Named, true);
        assert_eq!(result.unwrap(), data(&free), "left as they are");
        assert!(warnings.is_empty(), "{warnings:?}");
        // The same keys in a subscribe message name no type: refused.
        let err = checked(&free[..1], Keys::Every, false).0.unwrap_err();
        assert!(err.rule.contains("keyword type"), "{}", err.rule);
    }

    #[test]
    fn truncate_shortens_a_thing_to_17_characters_and_an_ellipsis() {
        let long = format!("{}{}", "您的订单已经备好请到前台取餐".repeat(2), "谢谢");
        assert_eq!(long.chars().count(), 30);
        let (result, warnings) = checked(&[("thing13", long.as_str())], Keys::Named, true);
        let sent = &result.unwrap().0[0].1.value;
        let want: String = long.chars().take(17).chain("…".chars()).collect();
        assert_eq!(sent, &want);
        assert_eq!(sent.chars().count(), 18, "17 characters and the ellipsis");
        assert!(check("thing13", sent).is_ok());
        assert_eq!(
            warnings,
            ["data.thing13.value: shortened from 30 to 18 characters \
              (thing: at most 20 characters; apps.NAME.truncate is on)"]
        );
    }

    #[test]
    fn truncate_shortens_a_character_string_to_29_characters_and_three_dots() {
        let long = "SF".repeat(20);
        let (result, warnings) =
            checked(&[("character_string21", long.as_str())], Keys::Named, true);
        let sent = &result.unwrap().0[0].1.value;
        assert_eq!(sent, &format!("{}...", &long[..29]));
        assert!(check("character_string21", sent).is_ok());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("data.character_string21.value: shortened from 40 to 32"),
            "{warnings:?}"
        );
    }

    #[test]
    fn truncate_leaves_values_that_fit_and_other_types_as_they_are() {
        let (twenty, thirty_two) = ("字".repeat(20), "x".repeat(32));
        let fits = [
            ("thing1", twenty.as_str()),
            ("character_string2", thirty_two.as_str()),
        ];
        let (result, warnings) = checked(&fits, Keys::Named, true);
        assert_eq!(result.unwrap(), data(&fits));
        assert!(warnings.is_empty(), "{warnings:?}");
        // Only thing and character_string are shortened: a const is one of the template's own
        // values, cut it and it is another.
        let err = checked(&[("const6", "x".repeat(21).as_str())], Keys::Named, true)
            .0
            .unwrap_err();
        assert_eq!(err.field, "data.const6.value");
        let err = checked(
            &[("phone_number3", "1".repeat(18).as_str())],
            Keys::Named,
            true,
        )
        .0
        .unwrap_err();
        assert_eq!(err.field, "data.phone_number3.value");
    }

    #[test]
    fn truncate_does_not_save_a_value_that_breaks_more_than_the_length() {
        // Chinese is never a character_string, however short it is cut.
        let err = checked(
            &[("character_string21", "单号".repeat(20).as_str())],
            Keys::Named,
            true,
        )
        .0
        .unwrap_err();
        assert_eq!(err.field, "data.character_string21.value");
        assert!(
            err.rule.contains("digits, letters and symbols"),
            "{}",
            err.rule
        );
    }

    #[test]
    fn without_truncate_an_over_long_value_is_refused_for_every_kind_of_keys() {
        for keys in [Keys::Every, Keys::Named] {
            for (key, value) in [
                ("thing1", "字".repeat(21)),
                ("character_string2", "x".repeat(33)),
            ] {
                let (result, warnings) = checked(&[(key, value.as_str())], keys, false);
                assert_eq!(result.unwrap_err().field, format!("data.{key}.value"));
                assert!(warnings.is_empty());
            }
        }
    }

    #[test]
    fn subscribe_keys_are_shortened_too_when_the_app_asks() {
        let (result, warnings) =
            checked(&[("thing1", "字".repeat(25).as_str())], Keys::Every, true);
        assert_eq!(result.unwrap().0[0].1.value.chars().count(), 18);
        assert_eq!(warnings.len(), 1);
    }
}
