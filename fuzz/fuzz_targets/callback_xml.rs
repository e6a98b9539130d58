//! Any callback body: the XML reader never panics, never expands an entity, and never reads
//! more list items than its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxcourier::callback::xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(message) = xml::message(text)
    {
        assert!(message.items.len() <= xml::MAX_LIST_ITEMS);
        let fields: usize = message.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        let items: usize = message
            .items
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(
            fields + items <= text.len(),
            "output larger than input means an entity was expanded"
        );
    }
});
