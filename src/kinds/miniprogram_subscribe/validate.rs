//! A mini-program subscribe message's fields: `touser`, `template_id`, `data{key:{value}}`
//! with typed keys, and optional `page`, `miniprogram_state` and `lang`.

use serde_json::{Map, Value};

use crate::kinds::fields::{self, Data};
use crate::kinds::{FieldError, typed};

pub(crate) const FIELDS: [&str; 6] = [
    "touser",
    "template_id",
    "page",
    "miniprogram_state",
    "lang",
    "data",
];

const STATES: [&str; 3] = ["developer", "trial", "formal"];
const LANGS: [&str; 4] = ["zh_CN", "en_US", "zh_HK", "zh_TW"];

pub(crate) struct Fields {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    pub(crate) page: Option<String>,
    pub(crate) miniprogram_state: Option<String>,
    pub(crate) lang: Option<String>,
    pub(crate) data: Data,
}

pub(crate) fn read(obj: &mut Map<String, Value>) -> Result<Fields, FieldError> {
    let touser = fields::touser(obj)?;
    let template_id = fields::template_id(obj)?;
    let page = fields::optional_page(obj, "page")?;
    let miniprogram_state = one_of(obj, "miniprogram_state", &STATES)?;
    let lang = one_of(obj, "lang", &LANGS)?;
    let data = fields::data(obj, false)?;
    typed::check_data(&data)?;
    Ok(Fields {
        touser,
        template_id,
        page,
        miniprogram_state,
        lang,
        data,
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
