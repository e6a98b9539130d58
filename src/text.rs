//! Bounding untrusted text before it is echoed into a header, a log line or an outcome: a
//! producer's 64 KiB key must not become a 64 KiB header.

/// `text` cut to at most `max` bytes at a character boundary, ending in `…` when cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded(&"黄".repeat(1000), 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == '黄'));
        assert_eq!(bounded(&"k".repeat(65_500), 1024).len(), 1024);
        assert_eq!(bounded("abcdef", 4), "a…");
    }
}
