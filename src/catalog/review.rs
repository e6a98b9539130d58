//! A template job held against its template: which placeholder keys it lacks (a rejection),
//! which keys the template does not have, and what WeChat's 2023 display rules will do to it
//! (warnings only). Pure: no logging, no state.

use serde_json::Value;

use super::list::Template;
use crate::kinds::display::HIDDEN_KEYS;

/// About this many characters of a field are shown since 2023.
pub(crate) const SHOWN_CHARS: usize = 20;

/// What of a template job the catalog looks at.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct JobData {
    pub(crate) template_id: String,
    pub(crate) entries: Vec<Entry>,
    pub(crate) topcolor: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) chars: usize,
    pub(crate) colored: bool,
}

impl JobData {
    /// Reads the WeChat body a template job sends (keys already without `.DATA`).
    pub(crate) fn from_body(body: &[u8]) -> Option<Self> {
        let body: Value = serde_json::from_slice(body).ok()?;
        let entries = body
            .get("data")?
            .as_object()?
            .iter()
            .map(|(key, entry)| Entry {
                key: key.clone(),
                chars: entry
                    .get("value")
                    .and_then(Value::as_str)
                    .map_or(0, |v| v.chars().count()),
                colored: entry.get("color").is_some_and(|c| !c.is_null()),
            })
            .collect();
        Some(Self {
            template_id: body.get("template_id")?.as_str()?.to_owned(),
            entries,
            topcolor: body.get("topcolor").is_some_and(|c| !c.is_null()),
        })
    }
}

/// A display rule a job runs into: logged, never a rejection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Note {
    /// It fills `first` or `remark`, which are not shown.
    HiddenKeys(Vec<String>),
    /// It sets `color` or `topcolor`, which are ignored.
    Colours,
    /// These values are longer than what is shown.
    LongValues(Vec<String>),
}

impl Note {
    /// A short name, for logging each kind of note once per template.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Note::HiddenKeys(_) => "hidden_keys",
            Note::Colours => "colours",
            Note::LongValues(_) => "long_values",
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::HiddenKeys(keys) => write!(
                f,
                "{} filled, but WeChat no longer shows first and remark (2023)",
                keys.join(", ")
            ),
            Note::Colours => f.write_str("color/topcolor set, but WeChat ignores colours (2023)"),
            Note::LongValues(keys) => write!(
                f,
                "{} over {SHOWN_CHARS} characters: WeChat shows about {SHOWN_CHARS} (2023)",
                keys.join(", ")
            ),
        }
    }
}

/// What holding a job against its template found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Review {
    /// Placeholder keys the job does not fill (`first` and `remark` excepted): a rejection.
    pub(crate) missing: Vec<String>,
    /// Keys the job fills that the template does not have: sent anyway, logged.
    pub(crate) extra: Vec<String>,
    pub(crate) notes: Vec<Note>,
}

pub(crate) fn review(template: &Template, job: &JobData) -> Review {
    let fills = |key: &str| job.entries.iter().any(|e| e.key == key);
    let missing = template
        .keys
        .iter()
        .filter(|k| !fills(k) && !HIDDEN_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let extra = job
        .entries
        .iter()
        .filter(|e| !template.keys.contains(&e.key))
        .map(|e| e.key.clone())
        .collect();
    let mut notes = Vec::new();
    let hidden: Vec<String> = job
        .entries
        .iter()
        .filter(|e| HIDDEN_KEYS.contains(&e.key.as_str()))
        .map(|e| e.key.clone())
        .collect();
    if !hidden.is_empty() {
        notes.push(Note::HiddenKeys(hidden));
    }
    if job.topcolor || job.entries.iter().any(|e| e.colored) {
        notes.push(Note::Colours);
    }
    let long: Vec<String> = job
        .entries
        .iter()
        .filter(|e| e.chars > SHOWN_CHARS)
        .map(|e| e.key.clone())
        .collect();
    if !long.is_empty() {
        notes.push(Note::LongValues(long));
    }
    Review {
        missing,
        extra,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(keys: &[&str]) -> Template {
        Template {
            id: "t".into(),
            title: "订单".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn job(data: Value) -> JobData {
        let body = json!({"touser": "o", "template_id": "t", "data": data, "client_msg_id": "1"});
        JobData::from_body(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn a_job_filling_every_key_passes_without_notes() {
        let r = review(
            &template(&["thing1", "time2"]),
            &job(json!({"thing1": {"value": "餐品已备好"}, "time2": {"value": "15:01"}})),
        );
        assert_eq!(r, Review::default());
    }

    #[test]
    fn missing_keys_are_named_in_the_templates_order() {
        let r = review(
            &template(&["a", "b", "c"]),
            &job(json!({"b": {"value": "x"}})),
        );
        assert_eq!(r.missing, ["a", "c"]);
    }

    #[test]
    fn first_and_remark_need_not_be_filled() {
        let r = review(
            &template(&["first", "keyword1", "remark"]),
            &job(json!({"keyword1": {"value": "x"}})),
        );
        assert!(r.missing.is_empty(), "{r:?}");
    }

    #[test]
    fn extra_keys_are_listed_not_refused() {
        let r = review(
            &template(&["a"]),
            &job(json!({"a": {"value": "x"}, "zz": {"value": "y"}})),
        );
        assert!(r.missing.is_empty());
        assert_eq!(r.extra, ["zz"]);
    }

    #[test]
    fn the_2023_display_rules_are_notes() {
        let body = json!({"touser": "o", "template_id": "t", "topcolor": "#FF0000", "client_msg_id": "1",
            "data": {"first": {"value": "hi"}, "a": {"value": "二十一个字二十一个字二十一个字二十一个字二"}, "remark": {"value": "bye"}}});
        let data = JobData::from_body(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert!(data.topcolor);
        let r = review(&template(&["first", "a", "remark"]), &data);
        assert_eq!(
            r.notes,
            [
                Note::HiddenKeys(vec!["first".into(), "remark".into()]),
                Note::Colours,
                Note::LongValues(vec!["a".into()]),
            ]
        );
        let colour_on_a_field = review(
            &template(&["a"]),
            &job(json!({"a": {"value": "x", "color": "#173177"}})),
        );
        assert_eq!(colour_on_a_field.notes, [Note::Colours]);
        // Exactly 20 characters are shown whole.
        let twenty = review(
            &template(&["a"]),
            &job(json!({"a": {"value": "字".repeat(20)}})),
        );
        assert!(twenty.notes.is_empty());
    }

    #[test]
    fn a_body_that_is_not_a_template_body_gives_nothing() {
        assert!(JobData::from_body(b"not json").is_none());
        assert!(JobData::from_body(br#"{"template_id": "t"}"#).is_none());
        assert!(JobData::from_body(br#"{"data": {}}"#).is_none());
    }
}
