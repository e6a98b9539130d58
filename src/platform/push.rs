//! What a push to a platform's authorization event URL says, read from its decrypted XML: a
//! new verify ticket, an authorization (new or updated) with the code to exchange, or a
//! withdrawal. Pure: the receiver checks the signature first and acts on the result.

use crate::callback::xml::CallbackXml;
use crate::config::is_authorizer_appid;
use crate::state::Ticket;
use crate::types::Secret;

/// The longest ticket or authorization code accepted (WeChat's are about 100 characters).
const MAX_OPAQUE_CHARS: usize = 512;

/// One push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `component_verify_ticket`: the newest ticket.
    Ticket(Ticket),
    /// `authorized` or `updateauthorized`: the code to exchange for the authorizer's tokens.
    Authorized {
        appid: String,
        code: Secret,
        created_at: i64,
    },
    /// `unauthorized`: the merchant withdrew the platform's authorization.
    Unauthorized { appid: String, created_at: i64 },
    /// Another `InfoType` (a fast registration, a mini-program review…): answered and left.
    Other(String),
}

/// Why a signed push cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PushError(String);

fn field<'a>(xml: &'a CallbackXml, name: &str) -> Result<&'a str, PushError> {
    xml.fields
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PushError(format!("{name} is missing")))
}

fn opaque(xml: &CallbackXml, name: &str) -> Result<Secret, PushError> {
    let value = field(xml, name)?;
    if value.chars().count() > MAX_OPAQUE_CHARS || value.chars().any(char::is_control) {
        return Err(PushError(format!(
            "{name} is over {MAX_OPAQUE_CHARS} characters or holds control characters"
        )));
    }
    Ok(Secret::new(value))
}

fn authorizer(xml: &CallbackXml) -> Result<String, PushError> {
    let appid = field(xml, "AuthorizerAppid")?;
    if !is_authorizer_appid(appid) {
        return Err(PushError(
            "AuthorizerAppid is not an AppID (1-32 letters and digits)".into(),
        ));
    }
    Ok(appid.to_owned())
}

/// Reads a push whose envelope named `component_appid`.
pub fn read(xml: &CallbackXml, component_appid: &str) -> Result<Push, PushError> {
    // Sealed for the component AppID already; a body naming another is not this platform's.
    if let Some(appid) = xml.fields.get("AppId")
        && appid.trim() != component_appid
    {
        return Err(PushError(
            "AppId is not this platform's component_appid".into(),
        ));
    }
    let created_at: i64 = field(xml, "CreateTime")?
        .parse()
        .map_err(|_| PushError("CreateTime is not a number".into()))?;
    let info = field(xml, "InfoType")?;
    Ok(match info {
        "component_verify_ticket" => Push::Ticket(Ticket {
            value: opaque(xml, "ComponentVerifyTicket")?,
            created_at,
        }),
        "authorized" | "updateauthorized" => Push::Authorized {
            appid: authorizer(xml)?,
            code: opaque(xml, "AuthorizationCode")?,
            created_at,
        },
        "unauthorized" => Push::Unauthorized {
            appid: authorizer(xml)?,
            created_at,
        },
        other => Push::Other(other.chars().take(64).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::xml;

    const COMPONENT: &str = "wxcomponent0000001";

    fn push(body: &str) -> Result<Push, PushError> {
        read(&xml::message(body).unwrap(), COMPONENT)
    }

    #[test]
    fn a_ticket_push_gives_the_ticket_and_its_time() {
        let got = push(
            "<xml><AppId>wxcomponent0000001</AppId><CreateTime>1413192605</CreateTime>\
             <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
             <ComponentVerifyTicket>ticket@@@abc</ComponentVerifyTicket></xml>",
        );
        assert_eq!(
            got,
            Ok(Push::Ticket(Ticket {
                value: Secret::new("ticket@@@abc"),
                created_at: 1_413_192_605
            }))
        );
    }

    #[test]
    fn authorizations_and_withdrawals_name_the_authorizer() {
        for info in ["authorized", "updateauthorized"] {
            let got = push(&format!(
                "<xml><AppId>wxcomponent0000001</AppId><CreateTime>5</CreateTime>\
                 <InfoType>{info}</InfoType><AuthorizerAppid>wxa1</AuthorizerAppid>\
                 <AuthorizationCode>code@@@1</AuthorizationCode>\
                 <AuthorizationCodeExpiredTime>600</AuthorizationCodeExpiredTime></xml>"
            ));
            assert_eq!(
                got,
                Ok(Push::Authorized {
                    appid: "wxa1".into(),
                    code: Secret::new("code@@@1"),
                    created_at: 5
                }),
                "{info}"
            );
        }
        let got = push(
            "<xml><AppId>wxcomponent0000001</AppId><CreateTime>6</CreateTime>\
             <InfoType>unauthorized</InfoType><AuthorizerAppid>wxa1</AuthorizerAppid></xml>",
        );
        assert_eq!(
            got,
            Ok(Push::Unauthorized {
                appid: "wxa1".into(),
                created_at: 6
            })
        );
    }

    #[test]
    fn a_push_that_is_not_what_it_claims_is_refused_naming_the_field() {
        let long = "x".repeat(MAX_OPAQUE_CHARS + 1);
        for (body, says) in [
            ("<xml><CreateTime>1</CreateTime></xml>", "InfoType"),
            ("<xml><InfoType>authorized</InfoType></xml>", "CreateTime"),
            (
                "<xml><CreateTime>soon</CreateTime><InfoType>unauthorized</InfoType></xml>",
                "CreateTime",
            ),
            (
                "<xml><AppId>wxother</AppId><CreateTime>1</CreateTime>\
                 <InfoType>unauthorized</InfoType><AuthorizerAppid>wxa</AuthorizerAppid></xml>",
                "AppId",
            ),
            (
                "<xml><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType></xml>",
                "ComponentVerifyTicket",
            ),
            (
                &format!(
                    "<xml><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType>\
                     <ComponentVerifyTicket>{long}</ComponentVerifyTicket></xml>"
                ),
                "ComponentVerifyTicket",
            ),
            (
                "<xml><CreateTime>1</CreateTime><InfoType>authorized</InfoType>\
                 <AuthorizerAppid>wx a</AuthorizerAppid><AuthorizationCode>c</AuthorizationCode></xml>",
                "AuthorizerAppid",
            ),
            (
                "<xml><CreateTime>1</CreateTime><InfoType>authorized</InfoType>\
                 <AuthorizerAppid>wxa</AuthorizerAppid></xml>",
                "AuthorizationCode",
            ),
            (
                "<xml><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType>\
                 <AuthorizerAppid>../../x</AuthorizerAppid></xml>",
                "AuthorizerAppid",
            ),
        ] {
            let err = push(body).unwrap_err();
            assert!(err.0.contains(says), "{body}: {err}");
        }
    }

    #[test]
    fn another_info_type_is_read_as_other() {
        let got = push(
            "<xml><CreateTime>1</CreateTime><InfoType>notify_third_fasteregister</InfoType></xml>",
        );
        assert_eq!(got, Ok(Push::Other("notify_third_fasteregister".into())));
    }
}
