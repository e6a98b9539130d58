//! `[admin]`: the operators' endpoint (`GET /v1/jobs/APP/ID`), off by default, on a port of its
//! own, never the callback's; its bearer token comes from `WXCOURIER_ADMIN__TOKEN` only.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, invalid};
use super::sections::HttpSettings;
use crate::types::Secret;

/// The variable the admin token is read from, raw (never typed as a number).
pub(crate) const ADMIN_TOKEN_ENV: &str = "WXCOURIER_ADMIN__TOKEN";

/// A shorter token is refused: it could be guessed.
pub(crate) const MIN_TOKEN_CHARS: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address for the admin endpoint; unset, it is not served.
    pub listen: Option<String>,
    /// The bearer token the endpoint asks for; from the environment only.
    pub token: Option<Secret>,
}

/// A file that names `admin.token` is refused: the token is a secret, and the file may be
/// read by more people than the process's environment.
pub(super) fn refuse_token_in_file(file: &figment::value::Dict) -> Result<(), ConfigError> {
    let in_file = matches!(
        file.get("admin"),
        Some(figment::value::Value::Dict(_, admin)) if admin.contains_key("token")
    );
    if in_file {
        return Err(invalid(
            "admin.token",
            format!("may come from the environment only ({ADMIN_TOKEN_ENV}), not the file"),
        ));
    }
    Ok(())
}

impl AdminSettings {
    /// An address of its own, and a token long enough, whenever it is served.
    pub(super) fn validate(&self, http: &HttpSettings) -> Result<(), ConfigError> {
        let Some(listen) = &self.listen else {
            return Ok(());
        };
        let Ok(admin) = listen.parse::<SocketAddr>() else {
            return Err(invalid(
                "admin.listen",
                "must be an address such as 127.0.0.1:9090",
            ));
        };
        if let Some(callback) = http.listen.as_deref().and_then(|l| l.parse().ok())
            && overlaps(admin, callback)
        {
            return Err(invalid(
                "admin.listen",
                "must not be http.listen's address: the callback port faces the internet",
            ));
        }
        match &self.token {
            None => Err(invalid(
                "admin.listen",
                format!("needs a bearer token in {ADMIN_TOKEN_ENV}"),
            )),
            Some(t) if t.expose().chars().count() < MIN_TOKEN_CHARS => Err(invalid(
                "admin.token",
                format!("must be at least {MIN_TOKEN_CHARS} characters ({ADMIN_TOKEN_ENV})"),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Whether two listen addresses take the same port on a common interface (an unspecified
/// address, 0.0.0.0 or ::, takes every interface).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, load};

    const TOKEN: &str = "0123456789012345678";

    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    #[test]
    fn off_by_default_and_served_with_an_address_and_a_token_from_the_environment() {
        let s = load(MINIMAL, &[]).unwrap();
        assert_eq!(s.admin, AdminSettings::default());
        assert_eq!(
            s.state.trail_ttl.get(),
            std::time::Duration::from_secs(7 * 86400)
        );
        let s = load(
            &with("[admin]\nlisten = \"127.0.0.1:9090\"\n"),
            &[(ADMIN_TOKEN_ENV, TOKEN)],
        )
        .unwrap();
        assert_eq!(s.admin.listen.as_deref(), Some("127.0.0.1:9090"));
        // Read raw: digits stay the string they are, never a number.
        assert_eq!(s.admin.token.unwrap().expose(), TOKEN);
        assert!(!format!("{:?}", load(MINIMAL, &[(ADMIN_TOKEN_ENV, TOKEN)])).contains(TOKEN));
    }

    #[test]
    fn a_token_in_the_file_is_refused_naming_the_variable() {
        let err = load(&with(&format!("[admin]\ntoken = \"{TOKEN}\"\n")), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.token") && err.contains(ADMIN_TOKEN_ENV),
            "{err}"
        );
        assert!(!err.contains(TOKEN), "{err}");
    }

    #[test]
    fn an_endpoint_without_a_token_or_with_a_short_one_is_refused() {
        let file = with("[admin]\nlisten = \"127.0.0.1:9090\"\n");
        let err = load(&file, &[]).unwrap_err().to_string();
        assert!(err.contains(ADMIN_TOKEN_ENV), "{err}");
        let err = load(&file, &[(ADMIN_TOKEN_ENV, "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        assert!(!err.contains("short"), "{err}");
    }

    #[test]
    fn the_callback_address_and_a_malformed_one_are_refused() {
        for (admin, http) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
        ] {
            let file = with(&format!(
                "[admin]\nlisten = \"{admin}\"\n[http]\nlisten = \"{http}\"\n"
            ));
            let err = load(&file, &[(ADMIN_TOKEN_ENV, TOKEN)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("admin.listen") && err.contains("http.listen"),
                "{err}"
            );
        }
        let file = with("[admin]\nlisten = \"localhost\"\n");
        let err = load(&file, &[(ADMIN_TOKEN_ENV, TOKEN)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.listen"), "{err}");
    }

    #[test]
    fn the_same_port_on_a_shared_interface_overlaps() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(overlaps(at("0.0.0.0:8080"), at("127.0.0.1:8080")));
        assert!(overlaps(at("127.0.0.1:8080"), at("[::]:8080")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("127.0.0.1:9090")));
        assert!(!overlaps(at("127.0.0.1:8080"), at("10.0.0.1:8080")));
    }
}
