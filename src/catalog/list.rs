//! WeChat's template list (`GET /cgi-bin/template/get_all_private_template`), read into the
//! templates the catalog keeps. The answer is untrusted: an entry without a usable id is
//! skipped (and counted), never a panic, and titles are cut before they reach a log.

use std::collections::HashSet;

use serde_json::Value;

use super::content::placeholder_keys;
use crate::kinds::fields::is_token_like;

/// The endpoint.
pub(crate) const PATH: &str = "/cgi-bin/template/get_all_private_template";

/// Longest title kept, in bytes.
const MAX_TITLE_BYTES: usize = 200;

/// One template of the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub(crate) id: String,
    pub(crate) title: String,
    /// The `{{key.DATA}}` keys of its content, in order.
    pub keys: Vec<String>,
}

/// The templates of an answer, and how many entries were skipped as unusable.
#[derive(Debug, PartialEq)]
pub struct Listed {
    pub templates: Vec<Template>,
    pub(crate) skipped: usize,
}

/// Why an answer holds no template list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ListError {
    #[error("the answer has no template_list")]
    Missing,
    #[error("template_list is not a list")]
    NotAList,
}

/// Reads `{"template_list": [{"template_id", "title", "content", …}]}`.
pub(crate) fn parse(answer: &Value) -> Result<Listed, ListError> {
    let Some(list) = answer.get("template_list") else {
        return Err(ListError::Missing);
    };
    let Value::Array(list) = list else {
        return Err(ListError::NotAList);
    };
    let mut seen = HashSet::new();
    let mut templates = Vec::new();
    let mut skipped = 0;
    for entry in list {
        let id = entry.get("template_id").and_then(Value::as_str);
        let Some(id) = id.filter(|id| is_token_like(id, 128) && !seen.contains(*id)) else {
            skipped += 1;
            continue;
        };
        seen.insert(id.to_owned());
        let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or("");
        templates.push(Template {
            id: id.to_owned(),
            title: crate::text::bounded(text("title"), MAX_TITLE_BYTES),
            keys: placeholder_keys(text("content")),
        });
    }
    Ok(Listed { templates, skipped })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_lists_each_template_with_its_keys() {
        let answer = json!({"template_list": [{
            "template_id": "iPk5sOIt5X_flOVKn5GrTFpncEYTojx6ddbt8WYoV5s",
            "title": "领取奖金提醒",
            "primary_industry": "IT科技",
            "deputy_industry": "互联网|电子商务",
            "content": "{{result.DATA}}\n\n领奖金额:{{withdrawMoney.DATA}}\n领奖时间:{{withdrawTime.DATA}}\n{{remark.DATA}}",
            "example": "您已提交领奖申请\n\n领奖金额：xxxx元\n领奖时间：2013-10-10 12:22:22\n"
        }]});
        let listed = parse(&answer).unwrap();
        assert_eq!(listed.skipped, 0);
        assert_eq!(
            listed.templates,
            [Template {
                id: "iPk5sOIt5X_flOVKn5GrTFpncEYTojx6ddbt8WYoV5s".into(),
                title: "领取奖金提醒".into(),
                keys: vec![
                    "result".into(),
                    "withdrawMoney".into(),
                    "withdrawTime".into(),
                    "remark".into()
                ],
            }]
        );
    }

    #[test]
    fn an_empty_list_is_an_account_without_templates() {
        let listed = parse(&json!({"template_list": []})).unwrap();
        assert!(listed.templates.is_empty());
    }

    #[test]
    fn an_answer_without_a_list_is_an_error() {
        assert_eq!(parse(&json!({"errcode": 0})), Err(ListError::Missing));
        assert_eq!(
            parse(&json!({"template_list": {"a": 1}})),
            Err(ListError::NotAList)
        );
        assert_eq!(parse(&json!([1, 2])), Err(ListError::Missing));
    }

    #[test]
    fn unusable_entries_are_skipped_and_counted() {
        let answer = json!({"template_list": [
            {"template_id": "ok_1", "content": "{{a.DATA}}"},
            {"template_id": 42, "content": "{{a.DATA}}"},
            {"content": "{{a.DATA}}"},
            {"template_id": "has space"},
            {"template_id": "x".repeat(129)},
            {"template_id": "ok_1", "content": "{{other.DATA}}"},
            "not an object",
            null,
            {"template_id": "ok_2", "title": 7, "content": ["not text"]}
        ]});
        let listed = parse(&answer).unwrap();
        assert_eq!(listed.skipped, 7);
        let ids: Vec<_> = listed.templates.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["ok_1", "ok_2"]);
        assert_eq!(
            listed.templates[0].keys,
            ["a"],
            "the first entry of an id wins"
        );
        assert_eq!(listed.templates[1].title, "");
        assert!(listed.templates[1].keys.is_empty());
    }

    #[test]
    fn a_huge_title_is_cut() {
        let answer =
            json!({"template_list": [{"template_id": "t", "title": "标".repeat(100_000)}]});
        let listed = parse(&answer).unwrap();
        assert!(listed.templates[0].title.len() <= MAX_TITLE_BYTES);
    }
}
