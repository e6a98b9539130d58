//! The placeholders of a template's `content`: each `{{key.DATA}}` names a `data` key a job
//! must fill. Anything else between `{{` and `}}` is a reserved word to WeChat (the seed page's
//! rule 1), not a key. The content comes from WeChat, so odd braces, unclosed markers and
//! megabytes of text are read in one linear pass without panicking.

use std::collections::HashSet;

/// Longest key a job may use (`[A-Za-z0-9_]{1,64}`): a longer placeholder could never be filled.
const MAX_KEY_BYTES: usize = 64;

/// The `{{key.DATA}}` keys of `content`, each once, in the order they first appear.
pub(crate) fn placeholder_keys(content: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut rest = content;
    while let Some(open) = rest.find("{{") {
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            break;
        };
        // `{{a {{b.DATA}}`: the marker that counts is the last opening before the close;
        // `{{{b.DATA}}}`: extra braces around a marker are text.
        let inner = &after_open[..close];
        let inner = match inner.rfind("{{") {
            Some(at) => &inner[at + 2..],
            None => inner,
        };
        let inner = inner.trim_start_matches('{').trim();
        if let Some(key) = inner.strip_suffix(".DATA")
            && is_key(key)
            && seen.insert(key)
        {
            keys.push(key.to_owned());
        }
        rest = &after_open[close + 2..];
    }
    keys
}

fn is_key(s: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_pages_template_reads_as_its_keys_in_order() {
        let content = "{{first.DATA}}\n会员：{{User.DATA}}\n时间：{{Date.DATA}}\n卡号：{{CardNumber.DATA}}\n\
                       金额：{{Money.DATA}}\n{{remark.DATA}}";
        assert_eq!(
            placeholder_keys(content),
            ["first", "User", "Date", "CardNumber", "Money", "remark"]
        );
    }

    #[test]
    fn a_key_used_twice_is_listed_once() {
        assert_eq!(
            placeholder_keys("{{a.DATA}} and {{b.DATA}} and again {{a.DATA}}"),
            ["a", "b"]
        );
    }

    #[test]
    fn a_marker_without_dot_data_is_a_reserved_word_not_a_key() {
        assert_eq!(
            placeholder_keys("{{first}} {{name.VALUE}} {{.DATA}} {{x.DATA}}"),
            ["x"]
        );
    }

    #[test]
    fn odd_braces_neither_panic_nor_invent_keys() {
        assert_eq!(placeholder_keys("{{{a.DATA}}}"), ["a"]);
        assert_eq!(placeholder_keys("{{ b.DATA }}"), ["b"]);
        assert_eq!(placeholder_keys("{{a {{b.DATA}}"), ["b"]);
        assert_eq!(placeholder_keys("{{c.DATA"), Vec::<String>::new());
        assert_eq!(placeholder_keys("}}{{d.DATA}}{{"), ["d"]);
        assert_eq!(placeholder_keys("{{}}{{{{}}}}{"), Vec::<String>::new());
        assert_eq!(placeholder_keys("{{e}.DATA}}"), Vec::<String>::new());
        assert_eq!(
            placeholder_keys("{{f-g.DATA}} {{h i.DATA}}"),
            Vec::<String>::new()
        );
        assert_eq!(placeholder_keys("{{a.DATA.DATA}}"), Vec::<String>::new());
    }

    #[test]
    fn unicode_around_and_inside_markers_is_handled_at_character_boundaries() {
        assert_eq!(
            placeholder_keys("订单{{thing1.DATA}}🎉{{金额.DATA}}{{time2.DATA}}é"),
            ["thing1", "time2"]
        );
        assert_eq!(placeholder_keys("{{🎉"), Vec::<String>::new());
        assert_eq!(placeholder_keys("{{a.DATA}}\u{0}{{b.DATA}}"), ["a", "b"]);
    }

    #[test]
    fn a_key_longer_than_a_job_may_use_is_not_a_key() {
        let long = "k".repeat(65);
        assert!(placeholder_keys(&format!("{{{{{long}.DATA}}}}")).is_empty());
        let fits = "k".repeat(64);
        assert_eq!(placeholder_keys(&format!("{{{{{fits}.DATA}}}}")), [fits]);
    }

    #[test]
    fn megabytes_of_braces_are_read_in_one_pass() {
        let started = std::time::Instant::now();
        let openers = "{{".repeat(1_000_000);
        assert!(placeholder_keys(&openers).is_empty());
        let unclosed = format!("{}}}}}", "{{x".repeat(500_000));
        assert!(placeholder_keys(&unclosed).is_empty());
        let many: String = (0..100_000).map(|i| format!("{{{{k{i}.DATA}}}}")).collect();
        assert_eq!(placeholder_keys(&many).len(), 100_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }
}
