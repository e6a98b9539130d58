//! What a Redis `state.url` names: one node (`redis://`, `rediss://`), a primary that Sentinel
//! watches (`redis+sentinel://`, `rediss+sentinel://`), or a Cluster (`redis+cluster://`,
//! `rediss+cluster://`). Parsed once, by validation and by the state backend alike, so both
//! read the same URL the same way. No error and no `Debug` output ever holds the password.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::types::Secret;

/// A Redis deployment `state.url` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// One node, through the URL as the `redis` crate reads it (`redis://`, `rediss://`).
    Single(SingleUrl),
    /// A primary found by asking the sentinels for `master`, and database `db` on it.
    Sentinel {
        sentinels: Endpoints,
        master: String,
        db: i64,
    },
    /// A Redis Cluster, discovered from any of `nodes`.
    Cluster { nodes: Endpoints },
}

/// A `redis://` or `rediss://` URL, kept whole for the `redis` crate; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SingleUrl(Secret);

impl SingleUrl {
    /// The URL itself, for the one place that opens the connection.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for SingleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleUrl(<redacted>)")
    }
}

/// The `HOST:PORT` list of a Sentinel or Cluster URL, with the credentials every node shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub hosts: Vec<HostPort>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl RedisUrl {
    /// Whether the connection is encrypted (`rediss…`).
    pub fn tls(&self) -> bool {
        match self {
            RedisUrl::Single(url) => url.expose().starts_with("rediss://"),
            RedisUrl::Sentinel { sentinels: e, .. } | RedisUrl::Cluster { nodes: e } => e.tls,
        }
    }

    /// The mode's name, as `wxcourier check` and the docs say it.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisUrl::Single(_) => "single",
            RedisUrl::Sentinel { .. } => "sentinel",
            RedisUrl::Cluster { .. } => "cluster",
        }
    }

    /// Reads a Redis URL. The error says what is wrong in words that name no part of the URL
    /// but hosts, ports and the scheme: the URL may hold a password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(EXPECTED.into());
        };
        let (tls, mode) = match scheme {
            "redis" | "rediss" => {
                return Ok(RedisUrl::Single(SingleUrl(Secret::new(url))));
            }
            "redis+sentinel" => (false, Mode::Sentinel),
            "rediss+sentinel" => (true, Mode::Sentinel),
            "redis+cluster" => (false, Mode::Cluster),
            "rediss+cluster" => (true, Mode::Cluster),
            _ => return Err(EXPECTED.into()),
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{scheme}:// takes no ?query or #fragment (a #insecure would skip the server's \
                 certificate check; percent-encode a ? or # in the password)"
            ));
        }
        // The credentials end at the last '@': a password may hold one, a host never does.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (username, password) = userinfo.map(credentials).transpose()?.unwrap_or_default();
        let endpoints = Endpoints {
            hosts: host_list(scheme, hosts)?,
            username,
            password,
            tls,
        };
        match mode {
            Mode::Cluster if path.is_empty() => Ok(RedisUrl::Cluster { nodes: endpoints }),
            Mode::Cluster => Err(format!(
                "{scheme}:// takes no /path: a Cluster has only database 0"
            )),
            Mode::Sentinel => {
                let (master, db) = path.split_once('/').unwrap_or((path, ""));
                if master.is_empty() {
                    return Err(format!(
                        "{scheme}:// needs the master's name after the hosts: \
                         {scheme}://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]"
                    ));
                }
                let db = match db {
                    "" => 0,
                    db => db.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        format!("{scheme}:// ends in /DB, a database number (0, 1, …)")
                    })?,
                };
                let master = percent_decode_str(master)
                    .decode_utf8()
                    .map_err(|_| "the master's name is not UTF-8".to_owned())?
                    .into_owned();
                Ok(RedisUrl::Sentinel {
                    sentinels: endpoints,
                    master,
                    db,
                })
            }
        }
    }
}

const EXPECTED: &str = "must be \"memory\" or a Redis URL: redis://, rediss:// (TLS), \
                        redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://";

enum Mode {
    Sentinel,
    Cluster,
}

/// `USER:PASSWORD`, `:PASSWORD` or `USER`, percent-decoded. The error never repeats them.
fn credentials(userinfo: &str) -> Result<(Option<String>, Option<Secret>), String> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("the {what} in the URL is not UTF-8 once %-decoded"))
    };
    let user = Some(decode(user, "user name")?).filter(|u| !u.is_empty());
    let password = password
        .map(|p| decode(p, "password"))
        .transpose()?
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    Ok((user, password))
}

/// `HOST:PORT[,HOST:PORT…]`; an IPv6 host is written in brackets (`[::1]:26379`).
fn host_list(scheme: &str, hosts: &str) -> Result<Vec<HostPort>, String> {
    if hosts.is_empty() {
        return Err(format!(
            "{scheme}:// needs at least one HOST:PORT before the first /"
        ));
    }
    hosts
        .split(',')
        .map(|one| {
            let one = one.trim();
            if one.is_empty() {
                return Err(format!(
                    "{scheme}:// has an empty or malformed host in its list"
                ));
            }
            let (host, port) = one
                .rsplit_once(':')
                .ok_or_else(|| format!("{scheme}:// host {one:?} needs a :PORT"))?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let valid_host = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
            if !valid_host {
                return Err(format!(
                    "{scheme}:// has an empty or malformed host in {one:?}"
                ));
            }
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{scheme}:// host {host} has a bad port {port:?}"))?;
            Ok(HostPort {
                host: host.to_owned(),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn a_plain_url_is_one_node_kept_whole() {
        let url = RedisUrl::parse("redis://:pw@127.0.0.1:6379/2").unwrap();
        let RedisUrl::Single(single) = &url else {
            panic!("{url:?}")
        };
        assert_eq!(single.expose(), "redis://:pw@127.0.0.1:6379/2");
        assert!(!url.tls());
        assert_eq!(url.mode(), "single");
        assert!(RedisUrl::parse("rediss://redis:6380").unwrap().tls());
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_master_and_database() {
        let url = RedisUrl::parse(
            "rediss+sentinel://app:p%40ss@10.0.0.1:26379,sentinel-2:26380,[::1]:26381/my%2Dmaster/3",
        )
        .unwrap();
        assert_eq!(url.mode(), "sentinel");
        let RedisUrl::Sentinel {
            sentinels,
            master,
            db,
        } = url
        else {
            panic!()
        };
        assert_eq!(
            sentinels.hosts,
            vec![
                hp("10.0.0.1", 26379),
                hp("sentinel-2", 26380),
                hp("::1", 26381)
            ]
        );
        assert_eq!(sentinels.username.as_deref(), Some("app"));
        assert_eq!(
            sentinels.password.as_ref().map(Secret::expose),
            Some("p@ss")
        );
        assert!(sentinels.tls);
        assert_eq!((master.as_str(), db), ("my-master", 3));
        assert_eq!(sentinels.hosts[2].to_string(), "[::1]:26381");
    }

    #[test]
    fn a_sentinel_url_without_credentials_or_database_uses_database_0() {
        let url = RedisUrl::parse("redis+sentinel://127.0.0.1:26391,127.0.0.1:26392/wxm").unwrap();
        assert_eq!(
            url,
            RedisUrl::Sentinel {
                sentinels: Endpoints {
                    hosts: vec![hp("127.0.0.1", 26391), hp("127.0.0.1", 26392)],
                    username: None,
                    password: None,
                    tls: false,
                },
                master: "wxm".into(),
                db: 0,
            }
        );
    }

    #[test]
    fn a_cluster_url_lists_its_seed_nodes() {
        let url = RedisUrl::parse("redis+cluster://:secret@127.0.0.1:7100,127.0.0.1:7101").unwrap();
        let RedisUrl::Cluster { nodes } = url else {
            panic!()
        };
        assert_eq!(
            nodes.hosts,
            vec![hp("127.0.0.1", 7100), hp("127.0.0.1", 7101)]
        );
        assert_eq!(nodes.username, None);
        assert_eq!(nodes.password.as_ref().map(Secret::expose), Some("secret"));
        assert!(RedisUrl::parse("rediss+cluster://n1:7000").unwrap().tls());
    }

    #[test]
    fn hostile_urls_are_refused_in_words_that_never_hold_the_password() {
        let cases = [
            ("redis+sentinel://:hunter2@/wxm", "at least one HOST:PORT"),
            ("redis+sentinel://:hunter2@", "at least one HOST:PORT"),
            ("redis+cluster://:hunter2@", "at least one HOST:PORT"),
            ("redis+sentinel://:hunter2@h1:26379,/wxm", "malformed host"),
            ("redis+sentinel://:hunter2@h1/wxm", "needs a :PORT"),
            ("redis+sentinel://:hunter2@h1:0/wxm", "bad port"),
            ("redis+sentinel://:hunter2@h1:70000/wxm", "bad port"),
            ("redis+sentinel://:hunter2@h1:26379x/wxm", "bad port"),
            ("redis+sentinel://:hunter2@h1:26379", "master's name"),
            ("redis+sentinel://:hunter2@h1:26379/", "master's name"),
            (
                "redis+sentinel://:hunter2@h1:26379/wxm/x",
                "database number",
            ),
            (
                "redis+sentinel://:hunter2@h1:26379/wxm/-1",
                "database number",
            ),
            ("redis+cluster://:hunter2@h1:7000/0", "no /path"),
            ("rediss+cluster://:hunter2@h1:7000#insecure", "#fragment"),
            ("redis+cluster://:hunter2@h1:7000?protocol=resp3", "?query"),
            ("redis+sentinel://:hunter2@h 1:26379/wxm", "malformed host"),
            (
                "redis-sentinel://:hunter2@h1:26379/wxm",
                "must be \"memory\"",
            ),
            ("memcached://x", "must be \"memory\""),
            ("hunter2", "must be \"memory\""),
        ];
        for (url, expected) in cases {
            let err = RedisUrl::parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn debug_output_never_holds_the_password() {
        for url in [
            "redis://:hunter2@h1:6379",
            "redis+sentinel://u:hunter2@h1:26379/wxm",
            "rediss+cluster://u:hunter2@h1:7000",
        ] {
            let parsed = RedisUrl::parse(url).unwrap();
            let debug = format!("{parsed:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
        }
    }
}
