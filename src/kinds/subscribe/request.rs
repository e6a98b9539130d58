//! `POST /cgi-bin/message/subscribe/bizsend`. It has no `client_msg_id`: the worker's own
//! idempotency store is what keeps a job from being sent twice.

use serde::Serialize;

use super::validate::Fields;
use crate::kinds::Message;
use crate::kinds::fields::{Data, MiniProgram};

pub(crate) const ENDPOINT: &str = "/cgi-bin/message/subscribe/bizsend";

#[derive(Serialize)]
struct Body<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<&'a MiniProgram>,
    data: &'a Data,
}

pub(crate) fn message(f: Fields) -> Message {
    let body = Body {
        touser: &f.touser,
        template_id: &f.template_id,
        page: f.page.as_deref(),
        miniprogram: f.miniprogram.as_ref(),
        data: &f.data,
    };
    let body = serde_json::to_vec(&body).expect("a bizsend body always serializes");
    Message {
        touser: f.touser,
        template_id: f.template_id,
        body,
    }
}
