//! Any safe-mode ciphertext: decryption never panics, and what seals opens to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxcourier::types::decode_aes_key;
use wxcourier::wechat::crypto::Envelope;

fuzz_target!(|data: &[u8]| {
    let key = decode_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
    let envelope = Envelope::new(key, "wx0000000000000000");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = envelope.open(text);
        let sealed = envelope.seal(text, [7; 16]);
        assert_eq!(envelope.open(&sealed).as_deref(), Ok(text));
    }
});
