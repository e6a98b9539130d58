//! `POST /cgi-bin/message/subscribe/send`. Like `bizsend` it has no `client_msg_id`.

use serde::Serialize;

use super::validate::Fields;
use crate::kinds::Message;
use crate::kinds::fields::Data;

pub(crate) const ENDPOINT: &str = "/cgi-bin/message/subscribe/send";

#[derive(Serialize)]
struct Body<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
    data: &'a Data,
}

pub(crate) fn message(f: Fields) -> Message {
    let body = Body {
        touser: &f.touser,
        template_id: &f.template_id,
        page: f.page.as_deref(),
        miniprogram_state: f.miniprogram_state.as_deref(),
        lang: f.lang.as_deref(),
        data: &f.data,
    };
    let body = serde_json::to_vec(&body).expect("a subscribe body always serializes");
    Message {
        touser: f.touser,
        template_id: f.template_id,
        body,
    }
}
