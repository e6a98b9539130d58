//! Any callback body: the XML reader never panics and never expands an entity.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(fields) = wxcourier::callback::xml::fields(text)
    {
        let total: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            total <= text.len(),
            "output larger than input means an entity was expanded"
        );
    }
});
