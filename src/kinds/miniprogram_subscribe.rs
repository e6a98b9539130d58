//! `miniprogram_subscribe`: the mini program's subscribe message. Its fields are `touser`,
//! `template_id`, `data{key:{value}}` with typed keys, and optional `page`,
//! `miniprogram_state` and `lang`; it is sent to `POST /cgi-bin/message/subscribe/send`,
//! which (like `bizsend`) has no `client_msg_id`. errcode 41030 means a page that is not one
//! of the mini program's published pages.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{self, Data, FieldError};
use super::request::{Override, ReadOptions, Request, Warnings};
use super::typed::{self, Keys};
use crate::outcome::OutcomeReason;

pub(super) const ENDPOINT: &str = "/cgi-bin/message/subscribe/send";

pub(super) const FIELDS: [&str; 6] = [
    "touser",
    "template_id",
    "page",
    "miniprogram_state",
    "lang",
    "data",
];

pub(super) const OVERRIDES: [Override; 1] = [Override {
    code: 41030,
    class: None,
    reason: Some(OutcomeReason::ContentRejected),
    describe: "page is not a published page of the mini program",
}];

/// Which version of the mini program the message opens.
const STATES: [&str; 3] = ["developer", "trial", "formal"];
/// The languages WeChat shows a subscribe message in.
const LANGS: [&str; 4] = ["zh_CN", "en_US", "zh_HK", "zh_TW"];

/// The body of `subscribe/send`.
#[derive(Serialize)]
struct SubscribeSendBody<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<String>,
    data: Data,
}

pub(super) fn read(
    obj: &mut Map<String, Value>,
    options: ReadOptions,
) -> Result<Request, FieldError> {
    let touser = fields::touser(obj)?;
    let template_id = fields::template_id(obj)?;
    let page = fields::optional_page(obj, "page")?;
    let miniprogram_state = one_of(obj, "miniprogram_state", &STATES)?;
    let lang = one_of(obj, "lang", &LANGS)?;
    let mut data = fields::data(obj, false)?;
    let mut warnings = Warnings::default();
    typed::check_data(
        &mut data,
        Keys::Every,
        options.truncate,
        &mut warnings.shortened,
    )?;
    let body = SubscribeSendBody {
        touser: &touser,
        template_id: &template_id,
        page,
        miniprogram_state,
        lang,
        data,
    };
    let body = serde_json::to_vec(&body).expect("a subscribe body always serializes");
    Ok(Request {
        touser,
        template_id,
        body,
        warnings,
    })
}

fn one_of(
    obj: &mut Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Option<String>, FieldError> {
    let value = fields::optional_string(obj, field)?;
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(FieldError::new(
            field,
            format!("must be one of {}", allowed.join(", ")),
        )),
        v => Ok(v),
    }
}
