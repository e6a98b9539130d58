//! The Redis deployments a state test runs on: the single node always, and Sentinel and Cluster
//! when `TEST_REDIS_SENTINEL_URL` / `TEST_REDIS_CLUSTER_URL` name them
//! (`scripts/redis-ha.sh urls`); an unset one is skipped with a note naming `what` went
//! unchecked.

/// The Redis every test can reach.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Each deployment by name: `redis`, then `redis+sentinel` and `redis+cluster` when set.
pub fn redis_urls(what: &str) -> Vec<(&'static str, String)> {
    let mut urls = vec![("redis", REDIS_URL.to_owned())];
    for (name, var) in [
        ("redis+sentinel", "TEST_REDIS_SENTINEL_URL"),
        ("redis+cluster", "TEST_REDIS_CLUSTER_URL"),
    ] {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => urls.push((name, url)),
            _ => eprintln!("note: {var} is unset: {what} is not checked on {name}"),
        }
    }
    urls
}
