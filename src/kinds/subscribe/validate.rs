//! A subscription notification's fields: `touser`, `template_id`, `data{key:{value}}` with
//! typed keys, and optional `page` and `miniprogram{appid,pagepath}`.

use serde_json::{Map, Value};

use crate::kinds::fields::{self, Data, MiniProgram};
use crate::kinds::{FieldError, typed};

pub(crate) const FIELDS: [&str; 5] = ["touser", "template_id", "page", "miniprogram", "data"];

pub(crate) struct Fields {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    pub(crate) page: Option<String>,
    pub(crate) miniprogram: Option<MiniProgram>,
    pub(crate) data: Data,
}

pub(crate) fn read(obj: &mut Map<String, Value>) -> Result<Fields, FieldError> {
    let touser = fields::touser(obj)?;
    let template_id = fields::template_id(obj)?;
    let page = fields::optional_page(obj, "page")?;
    let miniprogram = fields::miniprogram(obj)?;
    let data = fields::data(obj, false)?;
    typed::check_data(&data)?;
    Ok(Fields {
        touser,
        template_id,
        page,
        miniprogram,
        data,
    })
}
