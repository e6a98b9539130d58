//! Which routing keys of `wxcourier.results` reach no queue: AMQP's topic rules (`*` one word,
//! `#` none or more) held against the exchange's bindings, as the management API lists them
//! (AMQP itself cannot list bindings).

use super::management::Binding;

/// Whether the topic binding `pattern` takes `key`.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    words_match(&pattern, &key)
}

fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        // `#` takes none, or one more word and stays.
        Some((&"#", rest)) => {
            words_match(rest, key) || (!key.is_empty() && words_match(pattern, &key[1..]))
        }
        Some((word, rest)) => match key.split_first() {
            Some((k, key_rest)) => (*word == "*" || word == k) && words_match(rest, key_rest),
            None => false,
        },
    }
}

/// The keys among `keys` that no binding in `bindings` takes. A binding to another exchange
/// counts as taking what it matches: where that exchange routes it is not followed.
pub(crate) fn unbound<'a>(keys: &[&'a str], bindings: &[Binding]) -> Vec<&'a str> {
    keys.iter()
        .copied()
        .filter(|key| !bindings.iter().any(|b| topic_matches(&b.routing_key, key)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_the_broker_does() {
        for (pattern, key, want) in [
            ("sent.shop", "sent.shop", true),
            ("sent.*", "sent.shop", true),
            ("*.shop", "failed.shop", true),
            ("*.shop", "failed.cafe", false),
            ("#", "failed.shop", true),
            ("#.shop", "failed.shop", true),
            ("sent.#", "sent.shop", true),
            ("sent.#", "failed.shop", false),
            ("*", "sent.shop", false),
            ("*.*.*", "sent.shop", false),
            ("sent.shop.#", "sent.shop", true),
            ("#.#", "sent.shop", true),
            ("", "sent.shop", false),
        ] {
            assert_eq!(topic_matches(pattern, key), want, "{pattern} ~ {key}");
        }
    }

    #[test]
    fn keys_no_binding_takes_are_listed_in_order() {
        let binding = |key: &str| Binding {
            routing_key: key.into(),
        };
        let keys = ["sent.shop", "failed.shop", "rejected.shop"];
        assert_eq!(
            unbound(&keys, &[binding("sent.*")]),
            ["failed.shop", "rejected.shop"]
        );
        assert!(unbound(&keys, &[binding("#")]).is_empty());
        assert_eq!(unbound(&keys, &[]), keys);
    }
}
