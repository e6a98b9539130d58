//! What the simulated WeChat refuses in a message body, beside the checks every send route
//! makes (token, OpenID, quota). Written from WeChat's own documentation of each send API and
//! of the subscribe-message keyword types, not from the worker's checks: a rule the worker
//! misreads then shows up as a refusal here, and the test beside the worker's rules holds the
//! two to one table of values.

use serde_json::Value;

use crate::kinds::Kind;

/// The answer to a body `kind`'s endpoint refuses: errcode and errmsg.
pub(crate) fn refusal(kind: Kind, body: &Value) -> Option<(i64, String)> {
    match kind {
        Kind::Template => template(body),
        Kind::Subscribe => subscribe(body),
        Kind::MiniprogramSubscribe => miniprogram_state(body).or_else(|| subscribe(body)),
    }
}

/// `template/send`: a template_id WeChat could know (at most 128 characters), and some data.
/// A category template's keys (since 2023) are typed as a subscribe message's are, and WeChat
/// holds their values to the same rules; an older template's keys (`first`, `keyword1`) are
/// free text.
fn template(body: &Value) -> Option<(i64, String)> {
    let template_id = body["template_id"].as_str().unwrap_or("");
    if template_id.is_empty() || template_id.len() > 128 {
        return Some((40037, "invalid template_id".into()));
    }
    let Some(data) = body["data"].as_object().filter(|d| !d.is_empty()) else {
        return Some((47003, "argument invalid! data is empty".into()));
    };
    first_breach(data.iter().filter(|(key, _)| keyword_type(key).is_some()))
}

/// `subscribe/send`'s `miniprogram_state`: `developer`, `trial` or `formal`.
fn miniprogram_state(body: &Value) -> Option<(i64, String)> {
    let state = body.get("miniprogram_state")?;
    (!matches!(state.as_str(), Some("developer" | "trial" | "formal")))
        .then(|| (47003, "argument invalid! miniprogram_state invalid".into()))
}

/// Both subscribe APIs: a template, and every `data` value within its keyword's rule; 47003
/// names the first that is not.
fn subscribe(body: &Value) -> Option<(i64, String)> {
    if body["template_id"].as_str().is_none_or(str::is_empty) {
        return Some((40037, "invalid template_id".into()));
    }
    let Some(data) = body["data"].as_object().filter(|d| !d.is_empty()) else {
        return Some((47003, "argument invalid! data is empty".into()));
    };
    first_breach(data.iter())
}

/// 47003 naming the first entry whose value is outside its keyword's rule.
fn first_breach<'a>(
    mut entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Option<(i64, String)> {
    entries
        .find(|(key, entry)| {
            entry["value"]
                .as_str()
                .is_none_or(|v| !keyword_holds(key, v))
        })
        .map(|(key, _)| (47003, format!("argument invalid! data.{key}.value invalid")))
}

/// The keyword types of WeChat's 参数类型 table.
const KEYWORD_TYPES: [&str; 14] = [
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
    "const",
    "enum",
];

/// The keyword type a key is written with (`thing3` is a `thing`): one of the table's types
/// and then a number.
fn keyword_type(key: &str) -> Option<&'static str> {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == key.len() {
        return None;
    }
    KEYWORD_TYPES.iter().copied().find(|t| *t == base)
}

/// Whether `value` is within the documented rule of the keyword type `key` names (`thing3`
/// is a `thing`). A key that names no type is refused, as WeChat refuses it.
pub(crate) fn keyword_holds(key: &str, value: &str) -> bool {
    let Some(base) = keyword_type(key) else {
        return false;
    };
    let chars: Vec<char> = value.chars().collect();
    let len = chars.len();
    let all = |f: fn(char) -> bool| chars.iter().all(|&c| f(c));
    match base {
        // 事物: up to 20 characters of any kind.
        "thing" => len <= 20,
        // 数字: up to 32 characters, digits only, a decimal part allowed.
        "number" => len <= 32 && decimal(value, usize::MAX),
        // 字母: up to 32 letters only.
        "letter" => (1..=32).contains(&len) && all(|c| c.is_ascii_alphabetic()),
        // 符号: up to 5 symbols only.
        "symbol" => (1..=5).contains(&len) && all(symbol),
        // 字符串: up to 32 digits, letters and symbols.
        "character_string" => (1..=32).contains(&len) && all(|c| c.is_ascii_graphic()),
        // 时间: a 24-hour time, a date may come first; a span joins two with `~`.
        "time" => span(value, |m| m.time),
        // 日期: a date, a 24-hour time may follow; a span joins two with `~`.
        "date" => span(value, |m| m.date),
        // 金额: one currency sign, up to 10 digits, decimals allowed, may end in 元.
        "amount" => {
            let v = value.strip_suffix('元').unwrap_or(value);
            let v = v
                .strip_prefix(|c: char| CURRENCY_SIGNS.contains(c))
                .unwrap_or(v);
            decimal(v, 10)
        }
        // 电话: up to 17 digits and symbols.
        "phone_number" => {
            len <= 17
                && chars.iter().any(char::is_ascii_digit)
                && all(|c| c.is_ascii_digit() || symbol(c) || c == ' ')
        }
        // 车牌: up to 8; the first and the last may be Chinese, the rest letters or digits.
        "car_number" => {
            (1..=8).contains(&len)
                && chars.iter().enumerate().all(|(i, &c)| {
                    c.is_ascii_alphanumeric() || (chinese(c) && (i == 0 || i + 1 == len))
                })
        }
        // 姓名: up to 10 Chinese characters, or up to 20 letters and symbols; a name mixing
        // Chinese and letters counts as Chinese.
        "name" => {
            let name_char = |c: char| c.is_ascii_alphabetic() || symbol(c) || c == ' ';
            let limit = if chars.iter().any(|&c| chinese(c)) {
                10
            } else {
                20
            };
            (1..=limit).contains(&len) && chars.iter().all(|&c| chinese(c) || name_char(c))
        }
        // 汉字: up to 5 Chinese characters only.
        "phrase" => (1..=5).contains(&len) && all(chinese),
        // 常量: up to 20 characters.
        "const" => len <= 20,
        // 枚举: WeChat holds it to the template's own list, which the simulator does not keep.
        "enum" => true,
        // `keyword_type` knows no other type.
        _ => false,
    }
}

/// A template id as CONTRACT §1 has it: 1-128 of `[A-Za-z0-9_-]`.
pub(super) fn is_template_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The simulator's idea of a real OpenID: 28 characters of `[A-Za-z0-9_-]` starting with `o`.
pub(super) fn is_openid(s: &str) -> bool {
    s.len() == 28
        && s.starts_with('o')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The currency signs an amount may start with.
const CURRENCY_SIGNS: &str = "¥￥$€£₩₹";

/// CJK ideographs, the basic block and its extensions.
fn chinese(c: char) -> bool {
    matches!(u32::from(c), 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2EBEF)
}

/// Printable, and neither a letter, a digit, a Chinese character nor a space.
fn symbol(c: char) -> bool {
    !(c.is_alphanumeric() || c.is_whitespace() || c.is_control())
}

/// Digits (at most `max_whole` before the point) with an optional decimal part.
fn decimal(s: &str, max_whole: usize) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && whole.len() <= max_whole && parts.next().is_none_or(digits)
}

/// What one point of a time or date value holds.
#[derive(Clone, Copy)]
struct Moment {
    date: bool,
    time: bool,
}

/// One point, or two joined by `~`, each holding what `wanted` asks.
fn span(value: &str, wanted: fn(Moment) -> bool) -> bool {
    let points: Vec<&str> = value.split('~').collect();
    points.len() <= 2 && points.iter().all(|p| moment(p.trim()).is_some_and(wanted))
}

/// `[date][ ][time]`: a date, a time, or a date and then a time.
fn moment(s: &str) -> Option<Moment> {
    if let Some((date, time)) = s.rsplit_once(' ') {
        return (calendar_date(date.trim()) && clock(time)).then_some(Moment {
            date: true,
            time: true,
        });
    }
    if clock(s) {
        return Some(Moment {
            date: false,
            time: true,
        });
    }
    if calendar_date(s) {
        return Some(Moment {
            date: true,
            time: false,
        });
    }
    // `2019年10月1日15:01`: the Chinese form needs no space before its time, and WeChat's
    // date keyword is documented with it.
    let (date, time) = s.split_once('日')?;
    (calendar_date(&format!("{date}日")) && clock(time)).then_some(Moment {
        date: true,
        time: true,
    })
}

/// `H:MM` or `H:MM:SS` on a 24-hour clock.
fn clock(s: &str) -> bool {
    let fields: Vec<&str> = s.split(':').collect();
    let within = |f: &str, width: std::ops::RangeInclusive<usize>, top: u32| {
        width.contains(&f.len())
            && f.bytes().all(|b| b.is_ascii_digit())
            && f.parse::<u32>().is_ok_and(|n| n <= top)
    };
    matches!(fields.len(), 2 | 3)
        && within(fields[0], 1..=2, 23)
        && fields[1..].iter().all(|f| within(f, 2..=2, 59))
}

/// `2019年10月1日`, or `2019-10-01` with `-`, `/` or `.` between.
fn calendar_date(s: &str) -> bool {
    let fields: Vec<&str> = match s.strip_suffix('日') {
        Some(rest) => rest.split(['年', '月']).collect(),
        None => s.split(['-', '/', '.']).collect(),
    };
    let within = |f: &str, width: std::ops::RangeInclusive<usize>, low: u32, top: u32| {
        width.contains(&f.len())
            && f.bytes().all(|b| b.is_ascii_digit())
            && f.parse::<u32>().is_ok_and(|n| (low..=top).contains(&n))
    };
    fields.len() == 3
        && within(fields[0], 4..=4, 1, 9999)
        && within(fields[1], 1..=2, 1, 12)
        && within(fields[2], 1..=2, 1, 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyword values, each valid or not by WeChat's documentation. The worker's own check
    /// (`kinds::typed`) and the simulator's must both give the documented answer: a rule one
    /// side gets wrong fails here, whichever side it is.
    #[test]
    fn the_worker_and_the_simulator_agree_on_every_documented_keyword_rule() {
        let twenty = "字".repeat(20);
        let table: &[(&str, &str, bool)] = &[
            ("thing1", "您的餐品已备好", true),
            ("thing1", "Order #1842 ready!", true),
            ("thing1", &twenty, true),
            ("thing1", &format!("{twenty}字"), false),
            // What `apps.NAME.truncate` makes of an over-long value fits its type.
            ("thing1", &format!("{}…", "字".repeat(17)), true),
            ("number2", "260", true),
            ("number2", "260.50", true),
            ("number2", &"9".repeat(32), true),
            ("number2", &"9".repeat(33), false),
            ("number2", "26a", false),
            ("number2", "1.", false),
            ("number2", ".5", false),
            ("number2", "", false),
            ("letter3", "abcXYZ", true),
            ("letter3", "abc1", false),
            ("letter3", "", false),
            ("letter3", &"a".repeat(33), false),
            ("symbol4", "+-*", true),
            ("symbol4", "，。", true),
            ("symbol4", "+-*/%^", false),
            ("symbol4", "a", false),
            ("character_string5", "SF1234-56_x", true),
            ("character_string5", &"x".repeat(32), true),
            ("character_string5", &"x".repeat(33), false),
            ("character_string5", &format!("{}...", "x".repeat(29)), true),
            ("character_string5", "单号1", false),
            ("character_string5", "has space", false),
            ("time6", "15:01", true),
            ("time6", "9:05", true),
            ("time6", "2019年10月1日 15:01", true),
            ("time6", "2019-10-01 15:01:30", true),
            ("time6", "15:01~17:30", true),
            ("time6", "25:00", false),
            ("time6", "15:1", false),
            ("time6", "tomorrow", false),
            ("time6", "2019年10月1日", false),
            ("time6", "15:01~16:00~17:00", false),
            ("date7", "2019年10月1日", true),
            ("date7", "2019-10-01", true),
            ("date7", "2019/10/01", true),
            ("date7", "2019年10月1日 15:01", true),
            ("date7", "2019年10月1日~2019年10月3日", true),
            ("date7", "2019-13-01", false),
            ("date7", "2019-10-32", false),
            ("date7", "19-10-01", false),
            ("date7", "15:01", false),
            ("date7", "soon", false),
            ("amount8", "¥260.00", true),
            ("amount8", "260元", true),
            ("amount8", "$12", true),
            ("amount8", "1234567890", true),
            ("amount8", "12345678901", false),
            ("amount8", "about 5", false),
            ("amount8", "¥", false),
            ("phone_number9", "+86-0766-66888866", true),
            ("phone_number9", "13800138000", true),
            ("phone_number9", "+86-0766-668888661", false),
            ("phone_number9", "call me", false),
            ("car_number10", "粤A8Z888挂", true),
            ("car_number10", "A8Z888", true),
            ("car_number10", "粤A8Z88888挂", false),
            ("car_number10", "A粤8Z888", false),
            ("car_number10", "粤A-8Z88", false),
            ("name11", "黄先生", true),
            ("name11", "John Smith", true),
            ("name11", "黄John", true),
            ("name11", &"黄".repeat(10), true),
            ("name11", &"黄".repeat(11), false),
            ("name11", &"a".repeat(20), true),
            ("name11", &"a".repeat(21), false),
            ("name11", "R2D2", false),
            ("phrase12", "配送中", true),
            ("phrase12", "货物配送中", true),
            ("phrase12", "货物正在配送中", false),
            ("phrase12", "ok", false),
            ("phrase12", "", false),
            ("const13", "已支付", true),
            ("const13", &"x".repeat(21), false),
            ("enum14", "anything", true),
            ("thing", "no number after the type", false),
            ("keyword1", "not a type", false),
            ("thing1a", "digits must end the key", false),
        ];
        let mut disagreements = Vec::new();
        for &(key, value, valid) in table {
            let worker = crate::kinds::typed::check(key, value).is_ok();
            let simulator = keyword_holds(key, value);
            if (worker, simulator) != (valid, valid) {
                disagreements.push(format!(
                    "{key} = {value:?}: documented {valid}, worker {worker}, simulator {simulator}"
                ));
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }

    /// Template bodies, each refused by WeChat or not: a typed key (a category template's) is
    /// held to its type, any other key (an older template's) is free text. The worker's reading
    /// of a template job and the simulator's template route must both give that answer.
    #[test]
    fn the_worker_and_the_simulator_agree_on_which_template_bodies_are_refused() {
        let long = "字".repeat(200);
        let table: &[(&str, &str, bool)] = &[
            ("thing13", &"字".repeat(20), true),
            ("thing13", &"字".repeat(21), false),
            ("character_string21", "SF1234567890", true),
            ("character_string21", "单号", false),
            ("time4", "2026年11月28日 15:01", true),
            ("time4", "tomorrow", false),
            ("amount2", "¥260.00", true),
            ("amount2", "人民币260.00元", false),
            ("phone_number3", &"1".repeat(17), true),
            ("phone_number3", &"1".repeat(18), false),
            ("car_number5", "粤A8Z888挂", true),
            ("car_number5", "粤A8Z88888挂", false),
            ("const6", "已支付", true),
            ("const6", &"字".repeat(21), false),
            ("first", &long, true),
            ("keyword1", "人民币260.00元", true),
            ("remark", "", true),
            ("User", &long, true),
            ("short_thing1", &long, true),
            ("thing", &long, true),
        ];
        let mut disagreements = Vec::new();
        for &(key, value, valid) in table {
            let body = serde_json::json!({
                "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8",
                "template_id": "t",
                "data": {key: {"value": value}}
            });
            let mut obj = body.as_object().unwrap().clone();
            let worker = Kind::Template
                .read("id-1", &mut obj, crate::kinds::ReadOptions::default())
                .is_ok();
            let simulator = refusal(Kind::Template, &body).is_none();
            if (worker, simulator) != (valid, valid) {
                disagreements.push(format!(
                    "{key} = {value:?}: documented {valid}, worker {worker}, simulator {simulator}"
                ));
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }

    #[test]
    fn a_subscribe_body_is_refused_naming_the_first_value_outside_its_rule() {
        let body = serde_json::json!({
            "template_id": "t",
            "data": {"thing1": {"value": "ok"}, "number2": {"value": "twelve"}}
        });
        for kind in [Kind::Subscribe, Kind::MiniprogramSubscribe] {
            let (code, errmsg) = refusal(kind, &body).unwrap();
            assert_eq!(code, 47003);
            assert!(errmsg.contains("data.number2.value"), "{errmsg}");
        }
        // A category template's typed keys are held to the same rules.
        let (code, errmsg) = refusal(Kind::Template, &body).unwrap();
        assert_eq!(code, 47003);
        assert!(errmsg.contains("data.number2.value"), "{errmsg}");
        let mut mp = body.clone();
        mp["data"]["number2"]["value"] = serde_json::json!("12");
        assert_eq!(refusal(Kind::MiniprogramSubscribe, &mp), None);
        mp["miniprogram_state"] = serde_json::json!("production");
        assert_eq!(refusal(Kind::MiniprogramSubscribe, &mp).unwrap().0, 47003);
        assert_eq!(
            refusal(Kind::Subscribe, &serde_json::json!({"data": {}}))
                .unwrap()
                .0,
            40037
        );
    }
}
