//! `POST /cgi-bin/message/template/send`, with the job id as `client_msg_id` so WeChat itself
//! drops a re-send of the same job.

use serde::Serialize;

use super::validate::Fields;
use crate::kinds::Message;
use crate::kinds::fields::{Data, MiniProgram};

pub(crate) const ENDPOINT: &str = "/cgi-bin/message/template/send";

#[derive(Serialize)]
struct Body<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<&'a MiniProgram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topcolor: Option<&'a str>,
    data: &'a Data,
    client_msg_id: &'a str,
}

pub(crate) fn message(f: Fields, id: &str) -> Message {
    let body = Body {
        touser: &f.touser,
        template_id: &f.template_id,
        url: f.url.as_deref(),
        miniprogram: f.miniprogram.as_ref(),
        topcolor: f.topcolor.as_deref(),
        data: &f.data,
        client_msg_id: id,
    };
    let body = serde_json::to_vec(&body).expect("a template body always serializes");
    Message {
        touser: f.touser,
        template_id: f.template_id,
        body,
    }
}
