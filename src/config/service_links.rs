//! Recognises the service-link variables Kubernetes injects into every pod, so that a Service
//! named `wxcourier` (or `wxcourier-…`) is not read as configuration.
//!
//! For each Service in the namespace, Kubernetes sets (name upper-cased, `-` → `_`):
//!
//! ```text
//! WXCOURIER_SERVICE_HOST=10.0.0.11          WXCOURIER_PORT=tcp://10.0.0.11:80
//! WXCOURIER_SERVICE_PORT=80                 WXCOURIER_PORT_80_TCP=tcp://10.0.0.11:80
//! WXCOURIER_SERVICE_PORT_HTTP=80            WXCOURIER_PORT_80_TCP_PROTO=tcp
//!                                           WXCOURIER_PORT_80_TCP_PORT=80
//!                                           WXCOURIER_PORT_80_TCP_ADDR=10.0.0.11
//! ```
//!
//! The rule has two halves, and a variable must pass both:
//!
//! - **Name.** `WXCOURIER` plus an optional `_WORD…` (the rest of the Service's name, as in
//!   `WXCOURIER_METRICS_SERVICE_HOST` for a Service `wxcourier-metrics`), then one of the
//!   suffixes above, and no `__` anywhere. Every configuration key has `__` between its
//!   levels (`WXCOURIER_AMQP__URL`), so no key can ever be taken for a service link.
//! - **Value.** The shape Kubernetes writes: an IP address, a port number, a protocol, or
//!   `proto://ip:port`. So `WXCOURIER_HTTP_PORT=8080` (a typo for a key, not a link, whose
//!   value would be `tcp://…`) is still reported as an unknown key.
//!
//! A Service whose name has two dashes in a row (`wxcourier--x`) yields `__` and is reported;
//! `enableServiceLinks: false` on the pod turns all of these variables off.

use std::net::{IpAddr, SocketAddr};

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// True when `name=value` is a Kubernetes service-link variable for a Service whose name
/// starts with `wxcourier`.
pub(crate) fn is_service_link(name: &str, value: &str) -> bool {
    let Some(rest) = name.strip_prefix("WXCOURIER") else {
        return false;
    };
    if name.contains("__") || !(rest.is_empty() || rest.starts_with('_')) {
        return false;
    }
    let words: Vec<&str> = name.split('_').collect();
    if words.iter().any(|w| {
        w.is_empty()
            || !w
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }) {
        return false;
    }
    // Try every split point: the Service's own name is words[..at], the link suffix the rest.
    // The Service name may itself contain SERVICE or PORT, so no split is assumed.
    (1..words.len()).any(|at| suffix_matches(&words[at..], value))
}

/// Does `suffix` (the words after the Service's name) with `value` look like a link?
fn suffix_matches(suffix: &[&str], value: &str) -> bool {
    match suffix {
        ["SERVICE", "HOST"] => is_ip(value),
        ["SERVICE", "PORT"] => is_port(value),
        // A named port: SERVICE_PORT_<NAME>, the name being a port name upper-cased.
        ["SERVICE", "PORT", name @ ..] => !name.is_empty() && is_port(value),
        ["PORT"] => is_link_url(value, None),
        ["PORT", port, proto] => {
            is_port_proto(port, proto) && is_link_url(value, Some((port, proto)))
        }
        ["PORT", port, proto, "ADDR"] => is_port_proto(port, proto) && is_ip(value),
        ["PORT", port, proto, "PORT"] => is_port_proto(port, proto) && value == *port,
        ["PORT", port, proto, "PROTO"] => {
            is_port_proto(port, proto) && value.eq_ignore_ascii_case(proto)
        }
        _ => false,
    }
}

fn is_ip(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
}

fn is_port(value: &str) -> bool {
    value.parse::<u16>().is_ok_and(|p| p > 0) && !value.starts_with('0')
}

fn is_port_proto(port: &str, proto: &str) -> bool {
    is_port(port) && PROTOCOLS.contains(&proto)
}

/// `tcp://10.0.0.11:80` or `tcp://[fd00::1]:80`; with `expect`, the port and protocol named in
/// the variable's own name.
fn is_link_url(value: &str, expect: Option<(&str, &str)>) -> bool {
    let Some((proto, addr)) = value.split_once("://") else {
        return false;
    };
    if !PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(proto)) {
        return false;
    }
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return false;
    };
    match expect {
        None => true,
        Some((port, expected_proto)) => {
            proto.eq_ignore_ascii_case(expected_proto) && addr.port().to_string() == port
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything Kubernetes sets for a Service `name` with a ClusterIP and these ports.
    fn injected(service: &str, ip: &str, ports: &[(&str, u16, &str)]) -> Vec<(String, String)> {
        let p = service.to_ascii_uppercase().replace('-', "_");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let (_, first, first_proto) = ports[0];
        let mut vars = vec![
            (format!("{p}_SERVICE_HOST"), ip.to_owned()),
            (format!("{p}_SERVICE_PORT"), first.to_string()),
            (
                format!("{p}_PORT"),
                format!("{}://{host}:{first}", first_proto.to_ascii_lowercase()),
            ),
        ];
        for (name, port, proto) in ports {
            let lower = proto.to_ascii_lowercase();
            let link = format!("{p}_PORT_{port}_{proto}");
            if !name.is_empty() {
                vars.push((
                    format!(
                        "{p}_SERVICE_PORT_{}",
                        name.to_ascii_uppercase().replace('-', "_")
                    ),
                    port.to_string(),
                ));
            }
            vars.push((link.clone(), format!("{lower}://{host}:{port}")));
            vars.push((format!("{link}_PROTO"), lower));
            vars.push((format!("{link}_PORT"), port.to_string()));
            vars.push((format!("{link}_ADDR"), ip.to_owned()));
        }
        vars
    }

    #[test]
    fn every_variable_kubernetes_injects_for_a_wxcourier_service_is_a_link() {
        for (service, ip) in [
            ("wxcourier", "10.96.12.7"),
            ("wxcourier-metrics", "10.96.0.1"),
            ("wxcourier-redis-2", "fd00:10:96::a"),
        ] {
            let vars = injected(
                service,
                ip,
                &[
                    ("http", 80, "TCP"),
                    ("metrics-udp", 9102, "UDP"),
                    ("", 7000, "SCTP"),
                ],
            );
            for (name, value) in &vars {
                assert!(is_service_link(name, value), "{name}={value}");
            }
        }
    }

    #[test]
    fn configuration_keys_are_never_links() {
        for (name, value) in [
            ("WXCOURIER_AMQP__URL", "amqp://u:p@h:5672/%2f"),
            ("WXCOURIER_HTTP__LISTEN", "0.0.0.0:8080"),
            ("WXCOURIER_APPS__PORT__SECRET", "80"),
            ("WXCOURIER_APPS__SERVICE__APPID", "10.0.0.1"),
            // A Service named `wxcourier--x`: reported, since `__` is how keys nest.
            ("WXCOURIER__X_SERVICE_HOST", "10.0.0.1"),
        ] {
            assert!(!is_service_link(name, value), "{name}");
        }
    }

    #[test]
    fn a_link_shaped_name_with_another_kind_of_value_is_not_a_link() {
        for (name, value) in [
            ("WXCOURIER_HTTP_PORT", "8080"),
            ("WXCOURIER_PORT", "8080"),
            ("WXCOURIER_PORT", "http://10.0.0.1:80"),
            ("WXCOURIER_SERVICE_HOST", "wxcourier.default.svc"),
            ("WXCOURIER_SERVICE_PORT", "http"),
            ("WXCOURIER_SERVICE_PORT", "080"),
            ("WXCOURIER_SERVICE_PORT", "70000"),
            ("WXCOURIER_PORT_80_TCP", "tcp://10.0.0.1:81"),
            ("WXCOURIER_PORT_80_TCP", "udp://10.0.0.1:80"),
            ("WXCOURIER_PORT_80_TCP_PORT", "81"),
            ("WXCOURIER_PORT_80_TCP_PROTO", "udp"),
            ("WXCOURIER_PORT_80_HTTP_PROTO", "http"),
            ("WXCOURIER_PORT_80_TCP_ADDR", "not-an-ip"),
            ("WXCOURIER_PORT_80_TCP_HOST", "10.0.0.1"),
        ] {
            assert!(!is_service_link(name, value), "{name}={value}");
        }
    }

    #[test]
    fn names_outside_the_shape_are_not_links() {
        for name in [
            "WXCOURIER_",
            "WXCOURIERX_SERVICE_HOST",
            "wxcourier_service_host",
            "WXCOURIER_SERVICE_HOST_",
            "WXCOURIER__SERVICE_HOST",
            "WXCOURIER_AMQP_URL",
            "WXCOURIER_SERVICE-X_SERVICE_HOST",
            "OTHER_SERVICE_HOST",
        ] {
            assert!(!is_service_link(name, "10.0.0.1"), "{name}");
        }
    }
}
