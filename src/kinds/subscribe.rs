//! `subscribe`: the service account's subscription notification. Its fields are `touser`,
//! `template_id`, `data{key:{value}}` with typed keys, and optional `page` and
//! `miniprogram{appid,pagepath}`; it is sent to `POST /cgi-bin/message/subscribe/bizsend`,
//! which has no `client_msg_id` (the worker's own idempotency store keeps a job from being
//! sent twice). Three errcodes of `bizsend` mean something of their own.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{self, Data, FieldError, MiniProgram};
use super::request::{Override, ReadOptions, Request, Warnings};
use super::typed::{self, Keys};
use crate::outcome::OutcomeReason;
use crate::types::Class;

pub(super) const ENDPOINT: &str = "/cgi-bin/message/subscribe/bizsend";

pub(super) const FIELDS: [&str; 5] = ["touser", "template_id", "page", "miniprogram", "data"];

pub(super) const OVERRIDES: [Override; 3] = [
    // Another message to the same user was being sent at that moment: try again later.
    Override {
        code: 43108,
        class: Some(Class::Transient),
        reason: None,
        describe: "another message to this user was being sent at the same time",
    },
    Override {
        code: 43107,
        class: None,
        reason: Some(OutcomeReason::ConfigError),
        describe: "the account may not send subscription notifications",
    },
    Override {
        code: 41030,
        class: None,
        reason: Some(OutcomeReason::ContentRejected),
        describe: "page is not a page of the mini program",
    },
];

/// The body of `bizsend`.
#[derive(Serialize)]
struct BizsendBody<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<MiniProgram>,
    data: Data,
}

pub(super) fn read(
    obj: &mut Map<String, Value>,
    options: ReadOptions,
) -> Result<Request, FieldError> {
    let touser = fields::touser(obj)?;
    let template_id = fields::template_id(obj)?;
    let page = fields::optional_page(obj, "page")?;
    let miniprogram = fields::miniprogram(obj)?;
    let mut data = fields::data(obj, false)?;
    let mut warnings = Warnings::default();
    typed::check_data(
        &mut data,
        Keys::Every,
        options.truncate,
        &mut warnings.shortened,
    )?;
    let body = BizsendBody {
        touser: &touser,
        template_id: &template_id,
        page,
        miniprogram,
        data,
    };
    let body = serde_json::to_vec(&body).expect("a bizsend body always serializes");
    Ok(Request {
        touser,
        template_id,
        body,
        warnings,
    })
}
