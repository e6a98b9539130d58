//! Keeps a platform's queue bound to exactly its active authorizers: at the start of each
//! session, then whenever the state's authorizers change (a cheap version read each second,
//! and at once when this process kept the change).
//! An authorization reaches every instance through the broker's binding within about a
//! second of being kept; a withdrawal unbinds, and later jobs for it land in
//! `wxcourier.unrouted`. The same looks keep the platform's gauges: its authorizers by
//! standing, and its ticket's age.

use std::collections::HashSet;
use std::time::Duration;

use lapin::Channel;
use tokio_util::sync::CancellationToken;

use super::context::ServedPlatform;
use crate::broker::management::ManagementApi;
use crate::broker::{JOBS_EXCHANGE, job_queue, platform_queues};
use crate::config::AmqpSettings;
use crate::metrics::Metrics;
use crate::platform::account_name;
use crate::state::Standing;

/// How often the state's authorizers are checked for a change.
const POLL: Duration = Duration::from_secs(1);

/// Binds (or unbinds) in flight at once on each channel.
const IN_FLIGHT: usize = 64;

/// Channels a platform's binds are spread over: the broker takes one channel's commands one
/// at a time, so a first start that binds thousands of authorizers goes faster on several.
pub(crate) const CHANNELS: usize = 4;

/// Runs until `stop` or until a channel fails. `chs` (at least one) carry the binds; `amqp`
/// locates the management API, which tells what is bound already.
pub(crate) async fn keep(
    chs: Vec<Channel>,
    platform: &ServedPlatform,
    amqp: &AmqpSettings,
    metrics: &Metrics,
    stop: CancellationToken,
) {
    let mut bound: HashSet<String> = HashSet::new();
    let mut seen = None;
    let mut existing = Some(already_bound(amqp, &platform.name).await);
    loop {
        gauge_ticket(platform, metrics).await;
        let first = existing.as_ref();
        match sync(&chs, platform, metrics, &mut bound, &mut seen, first).await {
            Ok(()) => existing = None,
            Err(Failure::Broker(e)) => {
                // A stop closes the channel under a sync in flight: nothing to say then.
                if !stop.is_cancelled() {
                    tracing::warn!(platform = platform.name, error = %e, "cannot bind the platform's authorizers; retried in the next session");
                }
                return;
            }
            // Said by the state's own health; tried again at the next poll.
            Err(Failure::State) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => {
                for ch in &chs {
                    let _ = ch.close(200, "stopping".into()).await;
                }
                return;
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = platform.changed.notified() => {}
        }
    }
}

enum Failure {
    Broker(lapin::Error),
    State,
}

/// What the broker routes to the platform's queue when the session starts: known (the
/// AppIDs bound), or not (the management API did not answer).
type Existing = Option<HashSet<String>>;

/// One look: when the version moved, binds the active authorizers not bound yet and unbinds
/// the others this session bound. The first look (`first`, with what was bound at the start)
/// binds only the active ones not bound already and unbinds every other one listed that is
/// bound, since an earlier run may have bound it; when what was bound is not known, it binds
/// every active one and unbinds every other one listed (binds and unbinds that change nothing
/// cost a round trip each).
async fn sync(
    chs: &[Channel],
    platform: &ServedPlatform,
    metrics: &Metrics,
    bound: &mut HashSet<String>,
    seen: &mut Option<u64>,
    first: Option<&Existing>,
) -> Result<(), Failure> {
    let component = &platform.component_appid;
    let version = platform
        .store
        .authorizers_version(component)
        .await
        .map_err(|_| Failure::State)?;
    if *seen == Some(version) {
        return Ok(());
    }
    let all = platform
        .store
        .authorizers(component)
        .await
        .map_err(|_| Failure::State)?;
    for standing in [
        Standing::Active,
        Standing::Revoked,
        Standing::NeedsReauthorization,
    ] {
        let count = all.iter().filter(|a| a.standing == standing).count();
        metrics.set_authorizers(&platform.name, standing.as_str(), count);
    }
    let active: HashSet<String> = all
        .iter()
        .filter(|a| a.standing == Standing::Active)
        .map(|a| a.appid.clone())
        .collect();
    if let Some(Some(existing)) = first {
        bound.extend(existing.intersection(&active).cloned());
    }
    let to_bind: Vec<&String> = active.iter().filter(|a| !bound.contains(*a)).collect();
    let to_unbind: Vec<String> = if let Some(existing) = first {
        all.iter()
            .filter(|a| a.standing != Standing::Active)
            .filter(|a| existing.as_ref().is_none_or(|e| e.contains(&a.appid)))
            .map(|a| a.appid.clone())
            .collect()
    } else {
        bound
            .iter()
            .filter(|a| !active.contains(*a))
            .cloned()
            .collect()
    };
    let name = &platform.name;
    let to_bind: Vec<String> = to_bind.into_iter().cloned().collect();
    route(chs, name, &to_bind, true)
        .await
        .map_err(Failure::Broker)?;
    route(chs, name, &to_unbind, false)
        .await
        .map_err(Failure::Broker)?;
    if !to_bind.is_empty() || !to_unbind.is_empty() {
        tracing::info!(
            platform = name,
            bound = to_bind.len(),
            unbound = to_unbind.len(),
            active = active.len(),
            "platform authorizers routed"
        );
    }
    for appid in &to_unbind {
        bound.remove(appid);
    }
    bound.extend(to_bind);
    *seen = Some(version);
    Ok(())
}

/// The AppIDs whose accounts `wxcourier.jobs` routes to `platform`'s queue now, through the
/// management API; unknown when it cannot say (not reachable, no monitoring tag, a listing
/// too big to read), which costs only binds that change nothing.
async fn already_bound(amqp: &AmqpSettings, platform: &str) -> Existing {
    let api = ManagementApi::from_settings(amqp).ok()?;
    let listed = api
        .bindings_between(JOBS_EXCHANGE, &job_queue(platform))
        .await;
    let bindings = match listed {
        Ok(Some(bindings)) => bindings,
        // No queue yet: nothing is bound.
        Ok(None) => return Some(HashSet::new()),
        Err(e) => {
            tracing::info!(platform, api = %api.describe(), error = %e, "cannot list the platform's bindings; binding every active authorizer");
            return None;
        }
    };
    let prefix = format!("{platform}:");
    Some(
        bindings
            .into_iter()
            .filter_map(|b| b.routing_key.strip_prefix(&prefix).map(str::to_owned))
            .collect(),
    )
}

/// The age of the platform's newest ticket, for `wxcourier_platform_ticket_age_seconds`; left
/// as it was when the state cannot be read, and unset until a ticket came.
async fn gauge_ticket(platform: &ServedPlatform, metrics: &Metrics) {
    if let Ok(Some(ticket)) = platform.store.ticket(&platform.component_appid).await {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        metrics.set_ticket_age(&platform.name, now.saturating_sub(ticket.created_at).max(0));
    }
}

/// Binds (or unbinds) the accounts of `appids`, [`IN_FLIGHT`] at a time on each of `chs`, in
/// turn. Loops, not closures over a stream: those make the session's future not `Send`.
async fn route(
    chs: &[Channel],
    platform: &str,
    appids: &[String],
    bind: bool,
) -> lapin::Result<()> {
    for chunk in appids.chunks(IN_FLIGHT * chs.len().max(1)) {
        let mut calls = Vec::with_capacity(chunk.len());
        for (appid, ch) in chunk.iter().zip(chs.iter().cycle()) {
            calls.push(route_one(ch, platform, account_name(platform, appid), bind));
        }
        for done in futures_util::future::join_all(calls).await {
            done?;
        }
    }
    Ok(())
}

async fn route_one(ch: &Channel, platform: &str, account: String, bind: bool) -> lapin::Result<()> {
    match bind {
        true => platform_queues::bind(ch, platform, &account).await,
        false => platform_queues::unbind(ch, platform, &account).await,
    }
}
