//! WeChat's 2023 display rules for template messages: what a job may still send but WeChat no
//! longer shows (`first`, `remark`, colours), told to the producer as the outcome's warnings.

use super::fields::Data;

/// Keys WeChat stopped showing in 2023: a job need not fill them.
pub(crate) const HIDDEN_KEYS: [&str; 2] = ["first", "remark"];

/// The warnings of a template job: one for each hidden key it fills, one for `topcolor`, one
/// for each entry's `color`, each naming its field.
pub(crate) fn warnings(data: &Data, topcolor: bool) -> Vec<String> {
    let hidden = data
        .0
        .iter()
        .filter(|(key, _)| HIDDEN_KEYS.contains(&key.as_str()))
        .map(|(key, _)| {
            format!("data.{key}: not shown, WeChat no longer shows first and remark (2023)")
        });
    let top = topcolor.then(|| "topcolor: ignored, WeChat no longer shows colours (2023)".into());
    let colours = data
        .0
        .iter()
        .filter(|(_, entry)| entry.color.is_some())
        .map(|(key, _)| {
            format!("data.{key}.color: ignored, WeChat no longer shows colours (2023)")
        });
    hidden.chain(top).chain(colours).collect()
}

#[cfg(test)]
mod tests {
    use super::super::fields::DataEntry;
    use super::*;

    fn data(entries: &[(&str, &str, Option<&str>)]) -> Data {
        Data(
            entries
                .iter()
                .map(|&(k, v, c)| {
                    (
                        k.to_owned(),
                        DataEntry {
                            value: v.to_owned(),
                            color: c.map(str::to_owned),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn first_remark_and_every_colour_are_named_and_nothing_else() {
        let d = data(&[
            ("first", "您好", None),
            ("thing1", "订单", Some("#173177")),
            ("keyword1", "x", None),
            ("remark", "谢谢", Some("#FF0000")),
        ]);
        let w = warnings(&d, true);
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(w[0].starts_with("data.first: not shown"), "{w:?}");
        assert!(w[1].starts_with("data.remark: not shown"), "{w:?}");
        assert!(w[2].starts_with("topcolor: ignored"), "{w:?}");
        assert!(w[3].starts_with("data.thing1.color: ignored"), "{w:?}");
        assert!(w[4].starts_with("data.remark.color: ignored"), "{w:?}");
    }

    #[test]
    fn a_job_wechat_shows_as_sent_has_no_warning() {
        let d = data(&[("thing1", "订单", None), ("keyword1", "x", None)]);
        assert!(warnings(&d, false).is_empty());
        // `First` or `remarks` are keys of their own, not the hidden ones.
        let d = data(&[("First", "x", None), ("remarks", "y", None)]);
        assert!(warnings(&d, false).is_empty());
    }
}
