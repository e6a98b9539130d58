//! Quiet hours end to end: the `wxcourier run` binary against the real broker and the
//! simulator, with a window around the present read in a zone other than the machine's. With
//! `drop` a job ends `suppressed` (an urgent one is sent); with `defer` a job waits for the end
//! of a window that closes seconds from now and is sent after it, never before.

mod common;

use std::time::Duration;

use common::process::{Binary, signal, wait_exit};
use common::*;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;
use wxcourier::sim::{SimOptions, Simulator};

/// `HH:MM` of the local time in `zone` at `t`.
fn local_hm(t: Timestamp, zone: &str) -> String {
    t.to_zoned(TimeZone::get(zone).unwrap())
        .strftime("%H:%M")
        .to_string()
}

async fn metrics_text(port: u16) -> String {
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await
            && let Ok(text) = answer.text().await
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no /metrics on port {port}");
}

/// The value of `family{app="APP"}` in a scrape; 0 when absent.
fn sample(text: &str, family: &str, app: &str) -> f64 {
    let prefix = format!("{family}{{app=\"{app}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn start(prefix: &str, quiet_keys: &str, port: u16) -> (Simulator, Binary, Harness) {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app(prefix);
    let bin = Binary::with(
        &app,
        &sim.base_url(),
        &format!("rate_per_second = 150\nburst = 10\n{quiet_keys}"),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let h = Harness::new(&app, &settings(&app, &sim)).await;
    (sim, bin, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_drop_mode_a_job_during_quiet_hours_is_suppressed_and_an_urgent_one_sent() {
    // An hour around now, as a Shanghai clock shows it (the machine runs on another zone).
    let now = Timestamp::now();
    let window = format!(
        "{}-{}",
        local_hm(now - jiff::SignedDuration::from_mins(30), "Asia/Shanghai"),
        local_hm(now + jiff::SignedDuration::from_mins(30), "Asia/Shanghai")
    );
    let port = free_port();
    let (sim, bin, mut h) = start(
        "quiet_drop",
        &format!("quiet_hours = \"{window}\"\ntimezone = \"Asia/Shanghai\"\nquiet_mode = \"drop\""),
        port,
    )
    .await;
    let mut worker = bin.spawn_worker();

    h.publish(&job("night-1", &openid(1))).await;
    let mut urgent = job("urgent-1", &openid(2));
    urgent["urgent"] = json!(true);
    h.publish(&urgent).await;
    let mut outcomes = h.outcomes(2).await;
    outcomes.sort_by_key(|o| o["id"].as_str().unwrap().to_owned());
    let (night, urgent) = (&outcomes[0], &outcomes[1]);
    assert_eq!(night["id"], "night-1");
    assert_eq!(night["status"], "suppressed", "{night}");
    assert_eq!(night["reason"], "quiet_hours", "{night}");
    assert_eq!(night["attempts"], 0);
    let error = night["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{window} Asia/Shanghai")),
        "{error}"
    );
    assert_eq!(urgent["status"], "sent", "{urgent}");
    // WeChat saw the urgent job alone.
    let sends = sim.sends();
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].touser, openid(2));

    let text = metrics_text(port).await;
    let app = h.app.clone();
    assert_eq!(
        sample(&text, "wxcourier_quiet_hours_dropped_total", &app),
        1.0
    );
    assert_eq!(
        sample(&text, "wxcourier_quiet_hours_urgent_total", &app),
        1.0
    );
    assert_eq!(
        sample(&text, "wxcourier_quiet_hours_deferred_total", &app),
        0.0
    );

    signal(&worker, "TERM");
    assert_eq!(
        wait_exit(&mut worker, Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    h.cleanup().await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_defer_mode_a_job_waits_for_the_end_of_quiet_hours_and_goes_within_the_spread() {
    // The window ends at the next whole minute on a New York clock, at least 8 s away.
    let now = Timestamp::now();
    let to_next_minute = 60 - now.as_second().rem_euclid(60);
    let end_secs = now.as_second() + to_next_minute + if to_next_minute < 8 { 60 } else { 0 };
    let end = Timestamp::from_second(end_secs).unwrap();
    let window = format!(
        "{}-{}",
        local_hm(end - jiff::SignedDuration::from_mins(5), "America/New_York"),
        local_hm(end, "America/New_York")
    );
    let spread = Duration::from_secs(5);
    let port = free_port();
    let (sim, bin, mut h) = start(
        "quiet_defer",
        &format!(
            "quiet_hours = \"{window}\"\ntimezone = \"America/New_York\"\nquiet_spread = \"5s\""
        ),
        port,
    )
    .await;
    let mut worker = bin.spawn_worker();
    h.publish(&job("dawn-1", &openid(3))).await;

    // Held while the window lasts: nothing reaches WeChat up to its last moments.
    let watch_until = end - jiff::SignedDuration::from_millis(50);
    while Timestamp::now() < watch_until {
        assert!(sim.sends().is_empty(), "sent before the end of quiet hours");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics_text(port).await;
    assert_eq!(
        sample(&text, "wxcourier_quiet_hours_deferred_total", &h.app),
        1.0,
        "counted once however many tiers it went through"
    );
    // Its copies in the delay tiers are holds, not retries of a failure.
    let copies: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("wxcourier_retries_total{") && l.contains(&h.app))
        .collect();
    assert!(!copies.is_empty(), "{text}");
    assert!(
        copies.iter().all(|l| l.contains("cause=\"held\"")),
        "{copies:?}"
    );

    let outcome = h.outcome_of("dawn-1").await;
    assert_eq!(outcome["status"], "sent", "{outcome}");
    assert_eq!(outcome["attempts"], 1);
    let sent_at: Timestamp = outcome["finished_at"].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= end, "sent at {sent_at}, before the end {end}");
    // Within its share of the spread, plus a tier (800 ms) and the send.
    let late = Duration::try_from(sent_at - end).unwrap();
    assert!(
        late <= spread + Duration::from_secs(3),
        "{late:?} after the end"
    );
    assert_eq!(sim.sends().len(), 1);

    signal(&worker, "TERM");
    assert_eq!(
        wait_exit(&mut worker, Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    h.cleanup().await;
    sim.stop();
}
