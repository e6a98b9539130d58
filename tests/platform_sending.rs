//! A third-party platform's authorizers send, through the real broker, Redis and the simulator:
//! an authorization is routed to the platform's shared queue within seconds, with no restart;
//! its jobs go out with the authorizer's own token and come back as its account
//! (`NAME:APPID`); a job for an account nobody authorized, or one withdrawn, lands in
//! `wxcourier.unrouted`; one that can no longer be sent ends `failed` /
//! `authorization_revoked`; and one authorizer's spent quota, or a backlog at its rate, parks
//! only its own jobs.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::platform_kit::*;
use common::schemas::CheckedTap;
use common::*;
use lapin::types::FieldTable;
use wxcourier::broker::{Publisher, UNROUTED, job_queue};
use wxcourier::sim::PlatformFaults;
use wxcourier::sim::push::CallbackTarget;
use wxcourier::state::Standing;
use wxcourier::types::Secret;

/// Whether the platform's queue is bound to `account` (the management API's bindings).
async fn bound(p: &Platform, account: &str) -> bool {
    let url = format!(
        "{}/api/bindings/%2F/e/wxcourier.jobs/q/{}",
        management_url(),
        job_queue(&p.name)
    );
    let rows: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .any(|b| b["routing_key"] == account)
}

/// Waits until the binding of `account` is `wanted`; how long that took.
async fn until_bound(p: &Platform, account: &str, wanted: bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if bound(p, account).await == wanted {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{account} never became {}",
        if wanted { "bound" } else { "unbound" }
    );
}

/// Takes the job `id` out of `wxcourier.unrouted`: each copy found.
async fn take_unrouted(conn: &lapin::Connection, id: &str) -> Vec<(Vec<u8>, String)> {
    take_where(conn, UNROUTED, |props| {
        let found = props.message_id().as_ref().map(|m| m.as_str().to_owned());
        (found.as_deref() == Some(id)).then(String::new)
    })
    .await
}

async fn publish(publisher: &Publisher, account: &str, id: &str, to: usize) {
    let body = serde_json::to_vec(&job(id, &openid(to))).unwrap();
    publisher
        .publish_job(account, id, &body, FieldTable::default())
        .await
        .expect("the broker confirms the job");
}

/// Reads outcomes from `tap` until every id of `ids` has one, or `limit` passes.
async fn outcomes(tap: &mut CheckedTap, ids: &[String], limit: Duration) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    let mut left: HashSet<&String> = ids.iter().collect();
    let start = Instant::now();
    while !left.is_empty() && start.elapsed() < limit {
        if let Some(o) = tap.next(Duration::from_millis(500)).await
            && o["kind"] == "send"
            && left.remove(&o["id"].as_str().unwrap_or_default().to_owned())
        {
            got.push(o);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_authorizer_sends_as_its_account_within_seconds_and_strangers_land_unrouted() {
    let p = spawn_platform("pfs_new").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let account = format!("{}:wxsendnew1", p.name);
    let authorized_at = Instant::now();
    p.t.sim.authorize(&p.component, "wxsendnew1").unwrap();
    until_bound(&p, &account, true).await;
    let routed_in = authorized_at.elapsed();
    eprintln!("authorized to routed: {routed_in:?}");
    assert!(routed_in < Duration::from_secs(5), "{routed_in:?}");

    // The platform's message and event URL (`…/$APPID$` in its console): WeChat forwards each
    // authorizer's events there, sealed with the platform's keys.
    p.t.sim.set_callback(
        "wxsendnew1",
        Some(CallbackTarget {
            url: format!("{}/wxsendnew1", p.url),
            token: TOKEN.into(),
            aes_key: Some(AES_KEY.into()),
        }),
    );
    let conn = connect().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    let mut tap = CheckedTap::open(&conn, &format!("*.{account}"))
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("pfs-new-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        publish(&publisher, &account, id, i + 1).await;
    }
    let got = outcomes(&mut tap, &ids, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3, "{got:?}");
    for o in &got {
        assert_eq!(o["status"], "sent", "{o}");
        assert_eq!(o["app"], account.as_str(), "{o}");
    }
    // Sent with the authorizer's own token: WeChat saw them as the authorizer's.
    let sends: Vec<_> =
        p.t.sim
            .sends()
            .into_iter()
            .filter(|s| {
                s.client_msg_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with("pfs-new-"))
            })
            .collect();
    assert_eq!(sends.len(), 3);
    assert_eq!(p.t.sim.stats().apps["wxsendnew1"].accepted, 3);
    // Their delivery reports come back through the message and event URL, as the account,
    // tied to their jobs.
    let mut reported = HashSet::new();
    let start = Instant::now();
    while reported.len() < 3 && start.elapsed() < Duration::from_secs(15) {
        if let Some(r) = tap.next(Duration::from_millis(500)).await
            && r["kind"] == "delivery"
        {
            assert_eq!(r["app"], account.as_str(), "{r}");
            assert_eq!(r["status"], "delivered", "{r}");
            reported.insert(r["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(reported, ids.iter().cloned().collect::<HashSet<_>>());

    // An account nobody authorized: no binding, so the broker keeps its job aside.
    let stranger = format!("{}:wxnobody", p.name);
    publish(&publisher, &stranger, "pfs-stranger", 9).await;
    let found = take_unrouted(&conn, "pfs-stranger").await;
    assert_eq!(
        found.len(),
        1,
        "the stranger's job is not in wxcourier.unrouted"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_or_unrecoverable_authorizer_gets_nothing_sent_and_nothing_lost() {
    let p = spawn_platform("pfs_gone").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let conn = connect().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();

    // Withdrawn: unbound, and its later jobs wait in wxcourier.unrouted.
    let gone = format!("{}:wxsendgone", p.name);
    p.t.sim.authorize(&p.component, "wxsendgone").unwrap();
    until_bound(&p, &gone, true).await;
    p.t.sim.unauthorize(&p.component, "wxsendgone").unwrap();
    p.wait_for_standing("wxsendgone", Standing::Revoked).await;
    until_bound(&p, &gone, false).await;
    publish(&publisher, &gone, "pfs-gone-1", 1).await;
    let found = take_unrouted(&conn, "pfs-gone-1").await;
    assert_eq!(
        found.len(),
        1,
        "the withdrawn authorizer's job is not in wxcourier.unrouted"
    );

    // Routed, but its refresh token is refused and the list cannot recover it: the job ends
    // failed / authorization_revoked with WeChat's code, and the account is unbound.
    let bad = format!("{}:wxsendbad", p.name);
    p.t.sim.authorize(&p.component, "wxsendbad").unwrap();
    until_bound(&p, &bad, true).await;
    let mut kept = p
        .store
        .authorizer(&p.component, "wxsendbad")
        .await
        .unwrap()
        .unwrap();
    kept.refresh_token = Some(Secret::new("refreshtoken@@@stale"));
    p.store.put_authorizer(&p.component, &kept).await.unwrap();
    p.set_faults(PlatformFaults {
        refuse_refresh: true,
        ..Default::default()
    });
    let mut tap = CheckedTap::open(&conn, &format!("*.{bad}")).await.unwrap();
    publish(&publisher, &bad, "pfs-bad-1", 2).await;
    let got = outcomes(&mut tap, &["pfs-bad-1".to_owned()], Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    let o = &got[0];
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(o["reason"], "authorization_revoked", "{o}");
    assert_eq!(o["errcode"], 61023, "{o}");
    assert_eq!(o["app"], bad.as_str(), "{o}");
    p.wait_for_standing("wxsendbad", Standing::NeedsReauthorization)
        .await;
    until_bound(&p, &bad, false).await;
    // The gauges an operator alerts on: the authorizers by standing, the ticket's age.
    let metrics = p.t.ctx.metrics.render();
    let name = &p.name;
    for line in [
        format!(
            "wxcourier_platform_authorizers{{platform=\"{name}\",standing=\"needs_reauthorization\"}} 1"
        ),
        format!("wxcourier_platform_authorizers{{platform=\"{name}\",standing=\"revoked\"}} 1"),
        format!("wxcourier_platform_ticket_age_seconds{{platform=\"{name}\"}}"),
    ] {
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authorizers_spent_quota_parks_only_its_own_jobs() {
    let p = spawn_platform("pfs_quota").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let (spent, fine) = (format!("{}:wxspent", p.name), format!("{}:wxfine", p.name));
    for appid in ["wxspent", "wxfine"] {
        p.t.sim.authorize(&p.component, appid).unwrap();
    }
    until_bound(&p, &spent, true).await;
    until_bound(&p, &fine, true).await;
    // WeChat knows an authorizer once the platform took a token for it; its quota is spent.
    let conn = connect().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    let mut spent_tap = CheckedTap::open(&conn, &format!("*.{spent}"))
        .await
        .unwrap();
    let mut fine_tap = CheckedTap::open(&conn, &format!("*.{fine}")).await.unwrap();
    publish(&publisher, &spent, "pfs-spent-0", 1).await;
    assert_eq!(
        outcomes(
            &mut spent_tap,
            &["pfs-spent-0".to_owned()],
            Duration::from_secs(20)
        )
        .await
        .len(),
        1
    );
    p.t.sim.set_quota_left("wxspent", 0);
    let spent_ids: Vec<String> = (1..=5).map(|i| format!("pfs-spent-{i}")).collect();
    let fine_ids: Vec<String> = (1..=5).map(|i| format!("pfs-fine-{i}")).collect();
    for (i, (a, b)) in spent_ids.iter().zip(&fine_ids).enumerate() {
        publish(&publisher, &spent, a, i + 2).await;
        publish(&publisher, &fine, b, i + 2).await;
    }
    // The other authorizer's jobs are all sent, promptly, while the spent one's wait.
    let start = Instant::now();
    let got = outcomes(&mut fine_tap, &fine_ids, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|o| o["status"] == "sent"));
    eprintln!("the other authorizer's five jobs: {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(10));
    let sent_spent = outcomes(&mut spent_tap, &spent_ids, Duration::from_millis(500)).await;
    assert!(
        sent_spent.iter().all(|o| o["status"] != "sent"),
        "a job of the spent authorizer was sent: {sent_spent:?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_authorizers_backlog_holds_up_no_other_and_keeps_its_rate() {
    const BUSY: usize = 60;
    const RATE: f64 = 4.0;
    // A prefetch of 16: without parking, 16 of the busy authorizer's jobs waiting for its rate
    // would hold every delivery of the shared queue, and the other's jobs would wait behind
    // its whole backlog (some 15 s).
    let p = spawn_platform_with("pfs_busy", |s| {
        s.amqp.prefetch = std::num::NonZeroU16::new(16).unwrap();
        for platform in s.platforms.values_mut() {
            platform.rate_per_second = rate(RATE);
            platform.burst = count(1);
        }
    })
    .await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let (busy, quiet) = (format!("{}:wxbusy", p.name), format!("{}:wxquiet", p.name));
    for appid in ["wxbusy", "wxquiet"] {
        p.t.sim.authorize(&p.component, appid).unwrap();
    }
    until_bound(&p, &busy, true).await;
    until_bound(&p, &quiet, true).await;
    let conn = connect().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    let mut busy_tap = CheckedTap::open(&conn, &format!("*.{busy}")).await.unwrap();
    let mut quiet_tap = CheckedTap::open(&conn, &format!("*.{quiet}"))
        .await
        .unwrap();
    let busy_ids: Vec<String> = (0..BUSY).map(|i| format!("pfs-busy-{i}")).collect();
    for (i, id) in busy_ids.iter().enumerate() {
        publish(&publisher, &busy, id, 1000 + i).await;
    }
    let quiet_ids: Vec<String> = (0..5).map(|i| format!("pfs-quiet-{i}")).collect();
    for (i, id) in quiet_ids.iter().enumerate() {
        publish(&publisher, &quiet, id, 2000 + i).await;
    }
    let start = Instant::now();
    let got = outcomes(&mut quiet_tap, &quiet_ids, Duration::from_secs(20)).await;
    let quiet_took = start.elapsed();
    eprintln!("the quiet authorizer's five jobs, behind {BUSY} of the busy one's: {quiet_took:?}");
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|o| o["status"] == "sent"), "{got:?}");
    // Five at 4/s take about a second; behind the busy backlog they would take some 15 s.
    assert!(quiet_took < Duration::from_secs(8), "{quiet_took:?}");
    // The busy one's jobs all end sent, each once, and never faster than its rate.
    let got = outcomes(&mut busy_tap, &busy_ids, Duration::from_secs(60)).await;
    assert_eq!(got.len(), BUSY, "{} of {BUSY} busy jobs ended", got.len());
    assert!(got.iter().all(|o| o["status"] == "sent"), "{got:?}");
    let busy_users: HashSet<String> = (0..BUSY).map(|i| openid(1000 + i)).collect();
    let mut at: Vec<f64> =
        p.t.sim
            .sends()
            .into_iter()
            .filter(|r| busy_users.contains(&r.touser) && r.errcode == 0)
            .map(|r| r.at_ms)
            .collect();
    assert_eq!(at.len(), BUSY, "each busy job accepted once");
    at.sort_by(f64::total_cmp);
    let span_s = (at[BUSY - 1] - at[0]) / 1000.0;
    // One burst slot, then one per 250 ms: 59 intervals take at least 14.75 s.
    assert!(
        span_s >= (BUSY - 1) as f64 / RATE * 0.95,
        "{BUSY} sends in {span_s:.2} s: faster than {RATE}/s"
    );
    eprintln!("the busy authorizer's {BUSY} sends took {span_s:.2} s at {RATE}/s");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory_state_a_second_instance_of_a_platform_is_refused_but_a_successor_starts() {
    use tokio_util::sync::CancellationToken;
    use wxcourier::startup::Application;

    let p = spawn_platform_with("pfs_mem", |s| {
        s.state.url = Secret::new("memory");
        s.worker.drain_timeout = wxcourier::types::Span(Duration::from_secs(1));
    })
    .await;
    let settings = p.settings.clone();

    // A second instance while the first serves: refused, after waiting for it to leave.
    let started = Instant::now();
    let second = Application::build(settings.clone()).unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        second.run(CancellationToken::new()),
    )
    .await
    .expect("the second instance ends by itself");
    let err = format!("{:#}", ended.unwrap_err());
    assert!(
        err.contains(&p.name) && err.contains("state.url = \"memory\""),
        "{err}"
    );
    let waited = started.elapsed();
    eprintln!("refused after {waited:?}: {err}");
    assert!(waited >= Duration::from_secs(6), "{waited:?}");
    assert!(p.t.ctx.health.is_ready(), "the first instance goes on");

    // A successor, as in a rolling update: it waits while the first drains, then serves.
    let successor = Application::build(settings).unwrap();
    let ctx = successor.pipeline.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(successor.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ctx.health.is_ready());
    p.t.ask_to_stop();
    let since = Instant::now();
    while !ctx.health.is_ready() && since.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ctx.health.is_ready(), "the successor never served");
    stop.cancel();
    running.await.unwrap().unwrap();
    p.stop().await;
}

/// Binds (or unbinds) `account` to `p`'s queue behind the workers' backs.
async fn route_by_hand(conn: &lapin::Connection, p: &Platform, account: &str, bind: bool) {
    let ch = conn.create_channel().await.unwrap();
    let queue = job_queue(&p.name);
    if bind {
        ch.queue_bind(
            queue.as_str().into(),
            wxcourier::broker::JOBS_EXCHANGE.into(),
            account.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    } else {
        ch.queue_unbind(
            queue.as_str().into(),
            wxcourier::broker::JOBS_EXCHANGE.into(),
            account.into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_worker_binds_what_is_missing_and_unbinds_what_was_withdrawn() {
    use tokio_util::sync::CancellationToken;
    use wxcourier::startup::Application;

    let p = spawn_platform("pfs_start").await;
    let account = |appid: &str| format!("{}:{appid}", p.name);
    let now = unix_now() as i64;
    for (appid, standing) in [
        ("wxstays", Standing::Active),
        ("wxnew", Standing::Active),
        ("wxgone", Standing::Revoked),
    ] {
        let authorizer = wxcourier::state::Authorizer {
            appid: appid.into(),
            standing,
            refresh_token: (standing == Standing::Active).then(|| Secret::new("rt")),
            changed_at: now,
        };
        p.store
            .put_authorizer(&p.component, &authorizer)
            .await
            .unwrap();
    }
    until_bound(&p, &account("wxstays"), true).await;
    until_bound(&p, &account("wxnew"), true).await;
    let conn = connect().await;
    // With the management API, and with one that does not answer (every active one bound, every
    // other one listed unbound, as before it was read).
    for management in [None, Some("http://127.0.0.1:9/")] {
        // As if, while no worker ran, `wxnew` was authorized, `wxgone` withdrawn, and the
        // state lost `wxlost`, which is still bound.
        route_by_hand(&conn, &p, &account("wxnew"), false).await;
        route_by_hand(&conn, &p, &account("wxgone"), true).await;
        route_by_hand(&conn, &p, &account("wxlost"), true).await;
        let mut settings = p.settings.clone();
        if let Some(url) = management {
            settings.amqp.management_url = Some(Secret::new(url));
        }
        let starting = Application::build(settings).unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(starting.run(stop.clone()));
        until_bound(&p, &account("wxnew"), true).await;
        until_bound(&p, &account("wxgone"), false).await;
        assert!(bound(&p, &account("wxstays")).await, "{management:?}");
        // Unknown to the state: left routed, its jobs recover its token when they come.
        assert!(bound(&p, &account("wxlost")).await, "{management:?}");
        stop.cancel();
        running.await.unwrap().unwrap();
    }
    p.stop().await;
}

/// `wxcourier send --app ACCOUNT …` with a config naming `p`'s platform on Redis.
fn send_verb(p: &Platform, dir: &std::path::Path, account: &str, id: &str) -> (i32, String) {
    let config = dir.join("send.toml");
    std::fs::write(
        &config,
        format!(
            "[amqp]\nurl = \"{}\"\n[state]\nurl = \"redis://127.0.0.1:6379\"\n[platforms.{}]\n\
             component_appid = \"{}\"\ntoken = \"t\"\n\
             encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
            amqp_url(),
            p.name,
            p.component
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxcourier"))
        .args([
            "send",
            "--app",
            account,
            "--to",
            &openid(7),
            "--template",
            TEMPLATE,
        ])
        .args(["--data", "first=hello", "--id", id, "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_takes_an_authorizer_and_says_when_its_jobs_would_not_be_routed() {
    let p = spawn_platform("pfs_verb").await;
    p.t.sim.push_ticket(&p.component).unwrap();
    p.wait_for_ticket().await;
    let account = format!("{}:wxsendverb", p.name);
    p.t.sim.authorize(&p.component, "wxsendverb").unwrap();
    until_bound(&p, &account, true).await;
    let conn = connect().await;
    let mut tap = CheckedTap::open(&conn, &format!("*.{account}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = send_verb(&p, dir.path(), &account, "pfs-verb-1");
    assert_eq!(code, 0, "{text}");
    let got = outcomes(
        &mut tap,
        &["pfs-verb-1".to_owned()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["status"], "sent");
    // Not an authorizer of the platform: published, and told where it went.
    let stranger = format!("{}:wxnotyet", p.name);
    let (code, text) = send_verb(&p, dir.path(), &stranger, "pfs-verb-2");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("wxcourier.unrouted") && text.contains("dead replay"),
        "{text}"
    );
    let _ = take_unrouted(&conn, "pfs-verb-2").await;
    p.stop().await;
}

/// A platform's queue is its authorizers' queue, not one an app left behind: the check at
/// start and `wxcourier check` do not call it an orphan (they did, for every restart of a
/// platform's worker), but do once the platform is gone from the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platforms_queue_is_not_called_an_orphan_while_the_platform_is_configured() {
    use wxcourier::broker::orphans::{self, ManagementApi};
    let p = spawn_platform("porphan").await;
    let api = ManagementApi::from_settings(&p.settings.amqp).unwrap();
    let conn = connect().await;
    let queue = job_queue(&p.name);
    let found = orphans::find(&p.settings, &api, &conn).await.unwrap();
    assert!(!found.iter().any(|o| o.queue == queue), "{found:?}");
    let mut without = p.settings.clone();
    without.platforms.clear();
    let found = orphans::find(&without, &api, &conn).await.unwrap();
    assert!(found.iter().any(|o| o.queue == queue), "{found:?}");
    let _ = conn.close(200, "checked".into()).await;
    p.stop().await;
}
