//! A template job's fields: `touser`, `template_id`, `url`, `miniprogram`, `topcolor`, `data`.

use serde_json::{Map, Value};

use crate::kinds::FieldError;
use crate::kinds::fields::{self, Data, MiniProgram};

const MAX_URL_CHARS: usize = 1024;

pub(crate) const FIELDS: [&str; 6] = ["touser", "template_id", "url", "miniprogram", "topcolor", "data"];

/// A template job, checked.
pub(crate) struct Fields {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    pub(crate) url: Option<String>,
    pub(crate) miniprogram: Option<MiniProgram>,
    pub(crate) topcolor: Option<String>,
    pub(crate) data: Data,
}

pub(crate) fn read(obj: &mut Map<String, Value>) -> Result<Fields, FieldError> {
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
            return Err(FieldError::new("url", "must be an absolute http or https URL"));
        }
    }
    let miniprogram = fields::miniprogram(obj)?;
    let topcolor = fields::optional_string(obj, "topcolor")?;
    if let Some(c) = &topcolor
        && !fields::is_color(c)
    {
        return Err(FieldError::new("topcolor", "must be a color #RRGGBB"));
    }
    let data = fields::data(obj, true)?;
    Ok(Fields {
        touser,
        template_id,
        url,
        miniprogram,
        topcolor,
        data,
    })
}
