//! Any message body: parsing never panics, and a valid job always yields a WeChat body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (id, body) = match data.split_first() {
        Some((&flag, rest)) if flag % 2 == 0 => (Some("fuzz-id"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    if let Ok(job) = wxcourier::job::parse(body, id) {
        let wechat: serde_json::Value =
            serde_json::from_slice(&job.wechat_body()).expect("valid JSON");
        // Only the template endpoint takes a client_msg_id.
        if job.kind == wxcourier::kinds::Kind::Template {
            assert_eq!(wechat["client_msg_id"], job.id.as_str());
        } else {
            assert!(wechat.get("client_msg_id").is_none());
        }
    }
});
