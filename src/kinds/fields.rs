//! Readers for the job fields more than one kind shares: strings, OpenIDs, template ids,
//! `miniprogram`, and the `data` map in its two shapes.

use serde::Serialize;
use serde_json::{Map, Value};

/// A field of a job and the rule it broke.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub(crate) field: String,
    pub(crate) rule: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Longest data value accepted, in characters.
pub(crate) const MAX_VALUE_CHARS: usize = 1024;

pub(crate) fn required_string(
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<String, FieldError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

pub(crate) fn optional_string(
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

/// `touser`: an OpenID.
pub(crate) fn touser(obj: &mut Map<String, Value>) -> Result<String, FieldError> {
    let touser = required_string(obj, "touser")?;
    if !is_token_like(&touser, 64) {
        return Err(FieldError::new(
            "touser",
            "must be an OpenID: 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(touser)
}

/// `template_id`.
pub(crate) fn template_id(obj: &mut Map<String, Value>) -> Result<String, FieldError> {
    let id = required_string(obj, "template_id")?;
    if !is_token_like(&id, 128) {
        return Err(FieldError::new(
            "template_id",
            "must be 1-128 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(id)
}

/// An optional page path inside a mini program (`page`, `pagepath`).
pub(crate) fn optional_page(
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, FieldError> {
    let page = optional_string(obj, field)?;
    if let Some(p) = &page
        && p.chars().count() > MAX_VALUE_CHARS
    {
        return Err(FieldError::new(field, "must be at most 1024 characters"));
    }
    Ok(page)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MiniProgram {
    pub(crate) appid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pagepath: Option<String>,
}

/// `miniprogram {appid, pagepath}`: the mini program a message opens.
pub(crate) fn miniprogram(obj: &mut Map<String, Value>) -> Result<Option<MiniProgram>, FieldError> {
    match obj.remove("miniprogram") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut mp)) => {
            let appid = match mp.remove("appid") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(FieldError::new(
                        "miniprogram.appid",
                        "is required and must be a non-empty string",
                    ));
                }
            };
            let pagepath = match mp.remove("pagepath") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => return Err(FieldError::new("miniprogram.pagepath", "must be a string")),
            };
            if let Some(k) = mp.keys().next() {
                return Err(FieldError::new(
                    format!("miniprogram.{k}"),
                    "is not a known field",
                ));
            }
            Ok(Some(MiniProgram { appid, pagepath }))
        }
        Some(_) => Err(FieldError::new("miniprogram", "must be an object")),
    }
}

/// One `data` entry: `{value}` and, where a kind allows it, `color`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DataEntry {
    pub(crate) value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) color: Option<String>,
}

/// `data` entries in the order given, keys stripped of a `.DATA` suffix.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Data(pub(crate) Vec<(String, DataEntry)>);

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Reads `data {key: {value[, color]}}`; `colors` says whether `color` is allowed.
pub(crate) fn data(obj: &mut Map<String, Value>, colors: bool) -> Result<Data, FieldError> {
    let Some(Value::Object(map)) = obj.remove("data") else {
        return Err(FieldError::new("data", "is required and must be an object"));
    };
    if map.is_empty() {
        return Err(FieldError::new("data", "must have at least one entry"));
    }
    let mut entries: Vec<(String, DataEntry)> = Vec::with_capacity(map.len());
    for (raw_key, entry) in map {
        let key = raw_key.strip_suffix(".DATA").unwrap_or(&raw_key);
        let field = format!("data.{raw_key}");
        if !is_data_key(key) {
            return Err(FieldError::new(
                field,
                "key must be 1-64 characters of A-Z a-z 0-9 _ (optionally ending in .DATA)",
            ));
        }
        if entries.iter().any(|(k, _)| k == key) {
            return Err(FieldError::new(
                field,
                "names the same entry twice (with and without .DATA)",
            ));
        }
        let Value::Object(mut entry) = entry else {
            return Err(FieldError::new(field, "must be an object with a value"));
        };
        let value = match entry.remove("value") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(FieldError::new(
                    format!("{field}.value"),
                    "is required and must be a string",
                ));
            }
        };
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(FieldError::new(
                format!("{field}.value"),
                "must be at most 1024 characters",
            ));
        }
        if value.contains("{{") || value.contains("}}") {
            return Err(FieldError::new(
                format!("{field}.value"),
                "must not contain {{ or }} (template markers)",
            ));
        }
        let color = if colors {
            match entry.remove("color") {
                None | Some(Value::Null) => None,
                Some(Value::String(c)) if is_color(&c) => Some(c),
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{field}.color"),
                        "must be a color #RRGGBB",
                    ));
                }
            }
        } else {
            None
        };
        if let Some(k) = entry.keys().next() {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                "is not a known field",
            ));
        }
        entries.push((key.to_owned(), DataEntry { value, color }));
    }
    Ok(Data(entries))
}

pub(crate) fn is_token_like(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn is_data_key(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(crate) fn is_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}
