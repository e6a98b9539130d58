//! Callback security: the URL signature, and safe mode's AES-256-CBC envelope (WeChat's
//! "message encryption" scheme: 16 random bytes, a big-endian length, the XML, the AppID).

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// WeChat pads to 32-byte blocks (not AES's 16).
const PAD_BLOCK: usize = 32;

/// Why a safe-mode message was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the ciphertext is not base64")]
    Base64,
    #[error("the ciphertext is not a whole number of AES blocks")]
    BlockSize,
    #[error("the padding is invalid")]
    Padding,
    #[error("the decrypted message is malformed")]
    Malformed,
    #[error("the message is for another AppID")]
    AppId,
}

/// `sha1` of the parts sorted and joined, as lowercase hex: WeChat's signature for both the
/// plain URL check (token, timestamp, nonce) and `msg_signature` (… plus `Encrypt`).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut h = Sha1::new();
    for p in sorted {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Compares a received signature with the expected one in constant time.
pub(crate) fn signature_matches(parts: &[&str], received: &str) -> bool {
    let expected = signature(parts);
    expected.len() == received.len() && bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
}

/// One app's safe-mode keys.
#[derive(Clone)]
pub struct Envelope {
    key: [u8; 32],
    appid: String,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("key", &"[redacted]")
            .field("appid", &self.appid)
            .finish()
    }
}

impl Envelope {
    pub fn new(key: [u8; 32], appid: impl Into<String>) -> Self {
        Self {
            key,
            appid: appid.into(),
        }
    }

    fn iv(&self) -> [u8; 16] {
        self.key[..16].try_into().expect("16 of 32 bytes")
    }

    /// Decrypts an `Encrypt` value and checks that it was meant for this AppID.
    pub fn open(&self, encrypted_b64: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypted_b64.trim())
            .map_err(|_| CryptoError::Base64)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptoError::BlockSize);
        }
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &self.iv().into())
            .decrypt_padded::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::BlockSize)?;
        let pad = *plain.last().ok_or(CryptoError::Padding)? as usize;
        if pad == 0
            || pad > PAD_BLOCK
            || pad > plain.len()
            || plain[plain.len() - pad..]
                .iter()
                .any(|&b| b as usize != pad)
        {
            return Err(CryptoError::Padding);
        }
        let content = &plain[..plain.len() - pad];
        if content.len() < 20 {
            return Err(CryptoError::Malformed);
        }
        let len = u32::from_be_bytes(content[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &content[20..];
        if len > rest.len() {
            return Err(CryptoError::Malformed);
        }
        let (xml, appid) = rest.split_at(len);
        if appid.ct_eq(self.appid.as_bytes()).unwrap_u8() != 1 {
            return Err(CryptoError::AppId);
        }
        String::from_utf8(xml.to_vec()).map_err(|_| CryptoError::Malformed)
    }

    /// Encrypts `xml` as WeChat does (used by the simulator and by tests).
    pub fn seal(&self, xml: &str, random16: [u8; 16]) -> String {
        let mut buf = Vec::with_capacity(20 + xml.len() + self.appid.len() + PAD_BLOCK);
        buf.extend_from_slice(&random16);
        buf.extend_from_slice(&(xml.len() as u32).to_be_bytes());
        buf.extend_from_slice(xml.as_bytes());
        buf.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let len = buf.len();
        let sealed = cbc::Encryptor::<Aes256>::new(&self.key.into(), &self.iv().into())
            .encrypt_padded::<NoPadding>(&mut buf, len)
            .expect("the buffer is a whole number of blocks");
        STANDARD.encode(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::decode_aes_key;

    // WeChat's published sample for its message-encryption code.
    const SAMPLE_TOKEN: &str = "spamtest";
    const SAMPLE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const SAMPLE_APPID: &str = "wx2c2769f8efd9abc2";
    const SAMPLE_TIMESTAMP: &str = "1409735669";
    const SAMPLE_NONCE: &str = "1320562132";
    const SAMPLE_SIGNATURE: &str = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";
    const SAMPLE_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

    fn sample() -> Envelope {
        Envelope::new(decode_aes_key(SAMPLE_KEY).unwrap(), SAMPLE_APPID)
    }

    #[test]
    fn wechats_published_sample_verifies_and_decrypts() {
        assert!(signature_matches(
            &[SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT],
            SAMPLE_SIGNATURE
        ));
        let xml = sample().open(SAMPLE_ENCRYPT).unwrap();
        assert!(xml.starts_with("<xml>"), "{xml}");
        assert!(xml.contains("gh_10f6c3c3ac5a"), "{xml}");
    }

    #[test]
    fn seal_then_open_round_trips() {
        let e = sample();
        for xml in [
            "",
            "<xml/>",
            "<xml><a>中文</a></xml>",
            &"x".repeat(31),
            &"y".repeat(32),
        ] {
            assert_eq!(e.open(&e.seal(xml, [7; 16])).unwrap(), xml);
        }
    }

    #[test]
    fn a_wrong_appid_is_refused() {
        let sealed =
            Envelope::new(decode_aes_key(SAMPLE_KEY).unwrap(), "wxother").seal("<xml/>", [1; 16]);
        assert_eq!(sample().open(&sealed), Err(CryptoError::AppId));
    }

    #[test]
    fn tampered_ciphertext_is_refused_without_panicking() {
        let e = sample();
        let mut raw = STANDARD.decode(SAMPLE_ENCRYPT).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x55;
        assert!(e.open(&STANDARD.encode(&raw)).is_err());
        raw.truncate(raw.len() - 3);
        assert_eq!(e.open(&STANDARD.encode(&raw)), Err(CryptoError::BlockSize));
        assert_eq!(e.open("not base64!!"), Err(CryptoError::Base64));
        assert!(e.open("").is_err());
    }

    #[test]
    fn bad_padding_is_refused() {
        let key = decode_aes_key(SAMPLE_KEY).unwrap();
        // A block whose last byte claims 0 bytes of padding.
        let mut block = [0u8; 32];
        let len = block.len();
        let enc = cbc::Encryptor::<Aes256>::new(
            &key.into(),
            &key[..16].try_into().map(|a: [u8; 16]| a.into()).unwrap(),
        )
        .encrypt_padded::<NoPadding>(&mut block, len)
        .unwrap()
        .to_vec();
        assert_eq!(
            sample().open(&STANDARD.encode(enc)),
            Err(CryptoError::Padding)
        );
    }

    #[test]
    fn the_plain_signature_is_sorted_sha1_hex() {
        let sig = signature(&["token", "1409735669", "nonce"]);
        assert_eq!(sig.len(), 40);
        assert_eq!(sig, signature(&["nonce", "token", "1409735669"]));
        assert!(!signature_matches(&["token", "1", "n"], &sig));
        assert!(!signature_matches(
            &["token", "1409735669", "nonce"],
            "short"
        ));
    }
}
