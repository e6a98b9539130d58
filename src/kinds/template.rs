//! `template`: the service account's template message, the default kind. Its fields are
//! `touser`, `template_id`, `url`, `miniprogram`, `topcolor` and `data` (values with an optional
//! `color`); it is sent to `POST /cgi-bin/message/template/send` with the job id as
//! `client_msg_id`, so WeChat itself drops a re-send of the same job. A `data` key written as a
//! keyword type and a number (`thing13`, a category template's) is held to its type's rule, as
//! for the subscribe kinds; other keys are not. It reads every errcode as `wechat.*_codes` and
//! `wechat.reason_codes` say.

use serde::Serialize;
use serde_json::{Map, Value};

use super::display;
use super::fields::{self, Data, FieldError, MiniProgram};
use super::request::{Override, ReadOptions, Request, Warnings};
use super::typed::{self, Keys};

pub(super) const ENDPOINT: &str = "/cgi-bin/message/template/send";

pub(super) const FIELDS: [&str; 6] = [
    "touser",
    "template_id",
    "url",
    "miniprogram",
    "topcolor",
    "data",
];

pub(super) const OVERRIDES: [Override; 0] = [];

const MAX_URL_CHARS: usize = 1024;

/// The body of `template/send`.
#[derive(Serialize)]
struct TemplateBody<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<MiniProgram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topcolor: Option<String>,
    data: Data,
    client_msg_id: &'a str,
}

pub(super) fn read(
    id: &str,
    obj: &mut Map<String, Value>,
    options: ReadOptions,
) -> Result<Request, FieldError> {
    let touser = fields::touser(obj)?;
    let template_id = fields::template_id(obj)?;
    let url = fields::optional_string(obj, "url")?;
    if let Some(u) = &url {
        if u.chars().count() > MAX_URL_CHARS {
            return Err(FieldError::new("url", "must be at most 1024 characters"));
        }
        let ok = reqwest::Url::parse(u)
            .map(|p| matches!(p.scheme(), "http" | "https") && p.has_host())
            .unwrap_or(false);
        if !ok {
            return Err(FieldError::new(
                "url",
                "must be an absolute http or https URL",
            ));
        }
    }
    let miniprogram = fields::miniprogram(obj)?;
    let topcolor = fields::optional_string(obj, "topcolor")?;
    if let Some(c) = &topcolor
        && !fields::is_color(c)
    {
        return Err(FieldError::new("topcolor", "must be a color #RRGGBB"));
    }
    let mut data = fields::data(obj, true)?;
    let mut warnings = Warnings::default();
    typed::check_data(
        &mut data,
        Keys::Named,
        options.truncate,
        &mut warnings.shortened,
    )?;
    warnings.display = display::warnings(&data, topcolor.is_some());
    let body = TemplateBody {
        touser: &touser,
        template_id: &template_id,
        url,
        miniprogram,
        topcolor,
        data,
        client_msg_id: id,
    };
    let body = serde_json::to_vec(&body).expect("a template body always serializes");
    Ok(Request {
        touser,
        template_id,
        body,
        warnings,
    })
}
