//! Where each app's state lives in Redis. Every key of one app shares the hash tag `{APP}`
//! (`wxcourier:{APP}:KIND:REST`), so in a Cluster all of an app's keys sit in one slot and every
//! script and pipeline, which only ever touches one app, runs on one node. Versions before the
//! tag wrote `wxcourier:APP:KIND:REST`; a single node or a Sentinel primary may still hold such
//! keys after an upgrade, so the sent ids and msgids written then are still read from there (in
//! the same round trip) until they expire.

use std::fmt::Display;

/// The key of `kind` (`id`, `msgid`, `report`, `event`, `token`, `rate`, …) and `rest` for `app`.
pub(super) fn key(app: &str, kind: &str, rest: impl Display) -> String {
    format!("wxcourier:{{{app}}}:{kind}:{rest}")
}

/// The same key in the layout before the hash tag.
pub(super) fn legacy_key(app: &str, kind: &str, rest: impl Display) -> String {
    format!("wxcourier:{app}:{kind}:{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_app_carries_the_app_as_its_hash_tag() {
        assert_eq!(key("shop", "id", "order-1"), "wxcourier:{shop}:id:order-1");
        assert_eq!(key("shop", "msgid", 42), "wxcourier:{shop}:msgid:42");
        // Redis Cluster hashes only what is between the first `{` and the next `}`: the app,
        // whatever the id holds after it.
        for k in [
            key("shop", "id", "a}{b"),
            key("shop", "token", "lock"),
            key("shop", "rate", "gcra"),
        ] {
            assert_eq!(hash_tag(&k), Some("shop"), "{k}");
        }
        assert_eq!(
            legacy_key("shop", "id", "order-1"),
            "wxcourier:shop:id:order-1"
        );
        assert_eq!(hash_tag(&legacy_key("shop", "id", "x")), None);
    }

    /// Redis Cluster's rule: the text between the first `{` and the first `}` after it, if any.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        Some(&key[open + 1..close]).filter(|t| !t.is_empty())
    }
}
