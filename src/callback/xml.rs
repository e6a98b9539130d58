//! WeChat's flat message XML (`<xml><Field>…</Field>…</xml>`) into a field map. No DTDs and no
//! entities beyond XML's five and character references: nothing is ever expanded.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Why a body is not a WeChat message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not WeChat message XML: {0}")]
pub struct XmlError(pub String);

fn err(why: impl Into<String>) -> XmlError {
    XmlError(why.into())
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// The text of each direct child of the root element; nested elements are skipped.
pub fn fields(xml: &str) -> Result<HashMap<String, String>, XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut out = HashMap::new();
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    let mut saw_root = false;
    loop {
        match reader.read_event().map_err(|e| err(e.to_string()))? {
            Event::Start(e) => {
                depth += 1;
                if depth == 1 {
                    saw_root = true;
                } else if depth == 2 {
                    current = Some((e.local_name().as_ref().to_owned(), String::new()));
                }
            }
            Event::End(_) => {
                if depth == 2
                    && let Some((name, value)) = current.take()
                {
                    out.insert(name, value);
                }
                depth = depth.checked_sub(1).ok_or_else(|| err("unbalanced tags"))?;
            }
            Event::Empty(e) if depth == 1 => {
                out.insert(e.local_name().as_ref().to_owned(), String::new());
            }
            // Text as written: the reader works on a `str`, so there is nothing to decode.
            Event::Text(t) if depth == 2 => {
                if let Some((_, v)) = current.as_mut() {
                    v.push_str(&t);
                }
            }
            Event::CData(c) if depth == 2 => {
                if let Some((_, v)) = current.as_mut() {
                    v.push_str(&c);
                }
            }
            Event::GeneralRef(r) if depth == 2 => {
                let ch = match r.resolve_char_ref().map_err(|e| err(e.to_string()))? {
                    Some(c) => c,
                    None => {
                        let name: &str = &r;
                        predefined(name)
                            .ok_or_else(|| err(format!("entity &{name}; is not allowed")))?
                    }
                };
                if let Some((_, v)) = current.as_mut() {
                    v.push(ch);
                }
            }
            Event::DocType(_) => return Err(err("DTDs are not allowed")),
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root || depth != 0 {
        return Err(err("no complete root element"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_pages_event_parses_with_msgid_spelled_as_wechat_does() {
        let xml = "<xml> <ToUserName><![CDATA[gh_7f083739789a]]></ToUserName> <FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName> <CreateTime>1395658920</CreateTime> <MsgType><![CDATA[event]]></MsgType> <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event> <MsgID>200163836</MsgID> <Status><![CDATA[success]]></Status> </xml>";
        let f = fields(xml).unwrap();
        assert_eq!(f["MsgID"], "200163836");
        assert_eq!(f["Event"], "TEMPLATESENDJOBFINISH");
        assert_eq!(f["FromUserName"], "oia2TjuEGTNoeX76QEjQNrcURxG8");
        assert!(!f.contains_key("MsgId"));
    }

    #[test]
    fn predefined_entities_and_char_refs_resolve() {
        let f = fields("<xml><A>a &amp; b &#x41;&#66;</A></xml>").unwrap();
        assert_eq!(f["A"], "a & b AB");
    }

    #[test]
    fn dtds_and_custom_entities_are_refused() {
        let billion =
            "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">]><xml><A>&lol;</A></xml>";
        assert!(fields(billion).is_err());
        assert!(fields("<xml><A>&lol;</A></xml>").is_err());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for bad in [
            "",
            "not xml",
            "<xml><A>1</A>",
            "<xml><A>1</B></xml>",
            "</xml>",
            "<xml><A><![CDATA[x</A></xml>",
        ] {
            assert!(fields(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nested_elements_do_not_leak_into_fields() {
        let f = fields("<xml><A>1</A><B><C>2</C></B></xml>").unwrap();
        assert_eq!(f["A"], "1");
        assert!(!f.contains_key("C"));
    }
}
