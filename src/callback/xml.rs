//! WeChat's message XML into a field map (`<xml><Field>…</Field>…</xml>`) plus the items of its
//! nested lists (`<xml><SubscribeMsgPopupEvent><List><TemplateId>…</TemplateId>…</List>…`). No
//! DTDs and no entities beyond XML's five and character references: nothing is ever expanded.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Most `<List>` items one message may hold. WeChat's subscription events carry one item per
/// template the user decided on (a popup offers a handful); every item becomes a report, a
/// state call and a publish, so a signed push with thousands of them is refused, not served.
pub const MAX_LIST_ITEMS: usize = 16;

/// The element name of a nested list's items.
const LIST_ITEM: &str = "List";

/// Why a body is not a WeChat message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not WeChat message XML: {0}")]
pub struct XmlError(pub(crate) String);

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

/// One list item: the text of each of its child elements.
pub(crate) type Item = HashMap<String, String>;

/// A message as read: the root's direct children, and every `<List>` item found one level
/// below them, in document order (whatever element wraps them: WeChat's own documentation
/// has shown `subscribe_msg_change_event` wrapped in `SubscribeMsgPopupEvent`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackXml {
    pub fields: HashMap<String, String>,
    pub items: Vec<Item>,
}

/// The text of each direct child of the root element; nested elements are left out.
pub(crate) fn fields(xml: &str) -> Result<HashMap<String, String>, XmlError> {
    message(xml).map(|m| m.fields)
}

/// Reads a whole message: see [`CallbackXml`]. Elements nested deeper than a list item's fields,
/// and nested elements that are not `<List>`, are skipped (their entities still checked).
pub fn message(xml: &str) -> Result<CallbackXml, XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut out = CallbackXml::default();
    let mut depth = 0usize;
    // The root's child being read (depth 2), and a list item's field being read (depth 4).
    let mut field: Option<(String, String)> = None;
    let mut item_field: Option<(String, String)> = None;
    // The item being read, while inside a `<List>` at depth 3.
    let mut item: Option<Item> = None;
    let mut saw_root = false;
    let new_item = |items: &Vec<Item>| {
        if items.len() >= MAX_LIST_ITEMS {
            Err(err(format!("more than {MAX_LIST_ITEMS} <List> items")))
        } else {
            Ok(Item::new())
        }
    };
    loop {
        match reader.read_event().map_err(|e| err(e.to_string()))? {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                match depth {
                    1 => saw_root = true,
                    2 => field = Some((name.as_ref().to_owned(), String::new())),
                    3 if name.as_ref() == LIST_ITEM => item = Some(new_item(&out.items)?),
                    4 if item.is_some() => {
                        item_field = Some((name.as_ref().to_owned(), String::new()));
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                match depth {
                    2 => {
                        if let Some((name, value)) = field.take() {
                            out.fields.insert(name, value);
                        }
                    }
                    3 => out.items.extend(item.take()),
                    4 => {
                        if let (Some((name, value)), Some(current)) =
                            (item_field.take(), item.as_mut())
                        {
                            current.insert(name, value);
                        }
                    }
                    _ => {}
                }
                depth = depth.checked_sub(1).ok_or_else(|| err("unbalanced tags"))?;
            }
            Event::Empty(e) => {
                // An empty element opens no level: `depth` is that of its parent.
                let name = e.local_name();
                match depth {
                    1 => {
                        out.fields.insert(name.as_ref().to_owned(), String::new());
                    }
                    2 if name.as_ref() == LIST_ITEM => {
                        let empty = new_item(&out.items)?;
                        out.items.push(empty);
                    }
                    3 => {
                        if let Some(current) = item.as_mut() {
                            current.insert(name.as_ref().to_owned(), String::new());
                        }
                    }
                    _ => {}
                }
            }
            // Text as written: the reader works on a `str`, so there is nothing to decode.
            Event::Text(t) => {
                if let Some((_, v)) = text_at(depth, &mut field, &mut item_field) {
                    v.push_str(&t);
                }
            }
            Event::CData(c) => {
                if let Some((_, v)) = text_at(depth, &mut field, &mut item_field) {
                    v.push_str(&c);
                }
            }
            // Checked wherever it stands, kept only where text is read.
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| err(e.to_string()))? {
                    Some(c) => c,
                    None => {
                        let name: &str = &r;
                        predefined(name)
                            .ok_or_else(|| err(format!("entity &{name}; is not allowed")))?
                    }
                };
                if let Some((_, v)) = text_at(depth, &mut field, &mut item_field) {
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

/// Where text at `depth` belongs: a root child's value (depth 2) or a list item field's
/// (depth 4); text anywhere else is not kept.
fn text_at<'a>(
    depth: usize,
    field: &'a mut Option<(String, String)>,
    item_field: &'a mut Option<(String, String)>,
) -> Option<&'a mut (String, String)> {
    match depth {
        2 => field.as_mut(),
        4 => item_field.as_mut(),
        _ => None,
    }
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

    /// The popup example of WeChat's subscription-notification page: two templates decided.
    const POPUP: &str = "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName><CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>
        <List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
        <List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
    </SubscribeMsgPopupEvent></xml>";

    #[test]
    fn list_items_are_read_in_order_beside_the_flat_fields() {
        let m = message(POPUP).unwrap();
        assert_eq!(m.fields["Event"], "subscribe_msg_popup_event");
        assert_eq!(m.fields["FromUserName"], "otFpruAK8D-E6EfStSYonYSBZ8_4");
        assert_eq!(m.items.len(), 2);
        assert_eq!(
            m.items[0]["TemplateId"],
            "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
        );
        assert_eq!(m.items[0]["SubscribeStatusString"], "accept");
        assert_eq!(m.items[1]["SubscribeStatusString"], "reject");
        assert_eq!(m.items[1]["PopupScene"], "2");
        // An item's fields stay in the item.
        assert!(!m.fields.contains_key("TemplateId"));
        assert!(!m.fields.contains_key("List"));
    }

    #[test]
    fn a_sent_event_item_keeps_its_msgid_as_text() {
        let xml = "<xml><Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List><TemplateId>T</TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>";
        let m = message(xml).unwrap();
        assert_eq!(m.items.len(), 1);
        assert_eq!(m.items[0]["MsgID"], "1700827132819554304");
        assert_eq!(m.items[0]["ErrorCode"], "0");
        assert!(!m.fields.contains_key("MsgID"));
    }

    #[test]
    fn empty_items_and_empty_item_fields_are_kept() {
        let m = message("<xml><W><List/><List><TemplateId/></List></W></xml>").unwrap();
        assert_eq!(m.items.len(), 2);
        assert!(m.items[0].is_empty());
        assert_eq!(m.items[1]["TemplateId"], "");
    }

    #[test]
    fn entities_resolve_inside_items_and_custom_ones_are_refused_at_any_depth() {
        let m = message("<xml><W><List><A>a &lt;&#x42;&gt;</A></List></W></xml>").unwrap();
        assert_eq!(m.items[0]["A"], "a <B>");
        for deep in [
            "<xml><W><List><A>&lol;</A></List></W></xml>",
            "<xml><W><X><Y><Z>&lol;</Z></Y></X></W></xml>",
            "<xml><W>&lol;</W></xml>",
        ] {
            assert!(message(deep).is_err(), "{deep}");
        }
    }

    #[test]
    fn at_most_max_list_items_are_read_and_one_more_is_refused() {
        let items = |n: usize, item: &str| format!("<xml><W>{}</W></xml>", item.repeat(n));
        let full = message(&items(
            MAX_LIST_ITEMS,
            "<List><TemplateId>t</TemplateId></List>",
        ));
        assert_eq!(full.unwrap().items.len(), MAX_LIST_ITEMS);
        for item in ["<List><TemplateId>t</TemplateId></List>", "<List/>"] {
            let over = message(&items(MAX_LIST_ITEMS + 1, item)).unwrap_err();
            assert!(over.0.contains("<List> items"), "{over}");
            assert!(message(&items(100_000, item)).is_err());
        }
        // The cap counts every list of the message together.
        let split = format!(
            "<xml><A>{0}</A><B>{0}</B></xml>",
            "<List/>".repeat(MAX_LIST_ITEMS / 2 + 1)
        );
        assert!(message(&split).is_err());
    }

    #[test]
    fn malformed_nested_lists_are_errors_not_panics() {
        for bad in [
            "<xml><W><List><TemplateId>t</TemplateId></W></xml>",
            "<xml><W><List><TemplateId>t</List></W></xml>",
            "<xml><W><List><TemplateId>t</TemplateId></List>",
            "<xml><W></List></W></xml>",
            "<xml><W><List><![CDATA[x</List></W></xml>",
        ] {
            assert!(message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deeper_elements_and_lists_out_of_place_are_skipped() {
        let m = message(
            "<xml><List><TemplateId>root</TemplateId></List><W><List><A>1<B><C>2</C></B></A></List><X><List><A>3</A></List></X></W></xml>",
        )
        .unwrap();
        // `<List>` right under the root is a plain field, and one three levels down is not read.
        assert_eq!(m.items.len(), 1);
        assert_eq!(m.items[0]["A"], "1");
        assert!(!m.items[0].contains_key("B") && !m.items[0].contains_key("C"));
    }

    #[test]
    fn what_is_read_is_never_larger_than_the_body() {
        // The fuzz target's check (fuzz/fuzz_targets/callback_xml.rs) on this file's samples.
        for text in [
            POPUP,
            "<xml><A>a &amp; b &#x41;&#66;</A></xml>",
            "<xml><W><List><A>a &lt;&#x42;&gt;</A></List><List/></W></xml>",
        ] {
            let message = message(text).unwrap();
            assert!(message.items.len() <= MAX_LIST_ITEMS);
            let fields: usize = message.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
            let items: usize = message
                .items
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            assert!(fields + items <= text.len(), "{text}");
        }
    }
}
