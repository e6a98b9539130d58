//! The template catalog and the quota gauges end to end: real RabbitMQ, the worker, and the
//! simulator's template list and `openapi/quota/get`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wxcourier::config::Settings;
use wxcourier::sim::{DEFAULT_APPID, QUOTA_GET, SimOptions, SimTemplate, Simulator, TEMPLATE_LIST};

/// The template `common::job` fills (`first`, `keyword1`), which also shows `keyword2`.
const CONTENT: &str =
    "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n金额：{{keyword2.DATA}}\n{{remark.DATA}}";
const TEMPLATE_SEND: &str = "/cgi-bin/message/template/send";

fn template(id: &str, content: &str) -> SimTemplate {
    SimTemplate {
        template_id: id.into(),
        title: "订单支付成功".into(),
        primary_industry: "IT科技".into(),
        deputy_industry: "互联网|电子商务".into(),
        content: content.into(),
        example: String::new(),
    }
}

async fn sim_with(templates: Vec<SimTemplate>) -> Simulator {
    Simulator::start(
        "127.0.0.1:0",
        SimOptions {
            templates: [(DEFAULT_APPID.to_owned(), templates)].into(),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap()
}

fn catalog_every(refresh: Duration) -> impl FnOnce(&mut Settings) {
    move |s| {
        for app in s.apps.values_mut() {
            app.catalog = true;
            app.catalog_refresh = wxcourier::types::Span(refresh);
        }
    }
}

fn complete_job(id: &str, n: usize) -> Value {
    let mut j = job(id, &openid(n));
    j["data"]["keyword2"] = json!({"value": "¥260.00"});
    j
}

fn send_calls(sim: &Simulator) -> u64 {
    sim.stats().apps[DEFAULT_APPID].send_calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_missing_a_placeholder_is_rejected_before_any_send_and_a_complete_one_is_sent() {
    let sim = sim_with(vec![template(TEMPLATE, CONTENT)]).await;
    let mut t = spawn_app_on("catalog_keys", sim, catalog_every(Duration::from_secs(600))).await;

    t.publish(&job("c-missing", &openid(1))).await;
    let o = t.outcome_of("c-missing").await;
    assert_eq!(o["status"], "rejected", "{o}");
    assert_eq!(
        o["error"],
        "data: lacks keyword2, which the template's content shows as {{keyword2.DATA}}"
    );
    let dead = t.take_dead(1).await;
    assert_eq!(dead.len(), 1, "its original is kept in wxcourier.dead");
    assert!(dead[0].1.contains("keyword2"), "{}", dead[0].1);
    assert_eq!(
        send_calls(&t.sim),
        0,
        "nothing reached WeChat's send endpoint"
    );

    let mut unknown = complete_job("c-unknown", 2);
    unknown["template_id"] = json!("withdrawn_template");
    t.publish(&unknown).await;
    let o = t.outcome_of("c-unknown").await;
    assert_eq!(o["status"], "rejected", "{o}");
    assert!(
        o["error"]
            .as_str()
            .unwrap()
            .starts_with("template_id: \"withdrawn_template\" is not one of the account's 1"),
        "{o}"
    );
    assert_eq!(t.take_dead(1).await.len(), 1);
    assert_eq!(send_calls(&t.sim), 0);

    // first and remark are not shown since 2023: a job need not fill them.
    let mut bare = complete_job("c-complete", 3);
    bare["data"].as_object_mut().unwrap().remove("first");
    t.publish(&bare).await;
    let o = t.outcome_of("c-complete").await;
    assert_eq!(o["status"], "sent", "{o}");
    assert_eq!(send_calls(&t.sim), 1);
    let stats = t.sim.stats().apps[DEFAULT_APPID].clone();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.template_list_calls, 1, "fetched once at start");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_picks_up_a_template_added_later() {
    let sim = sim_with(vec![template(TEMPLATE, CONTENT)]).await;
    let mut t = spawn_app_on(
        "catalog_refresh",
        sim,
        catalog_every(Duration::from_secs(1)),
    )
    .await;
    let mut newer = complete_job("r-before", 1);
    newer["template_id"] = json!("added_later");
    t.publish(&newer).await;
    assert_eq!(t.outcome_of("r-before").await["status"], "rejected");
    assert_eq!(t.take_dead(1).await.len(), 1);

    t.sim.set_templates(
        DEFAULT_APPID,
        vec![
            template(TEMPLATE, CONTENT),
            template("added_later", "{{keyword1.DATA}} {{keyword2.DATA}}"),
        ],
    );
    let listed_before = t.sim.stats().apps[DEFAULT_APPID].template_list_calls;
    // Two refreshes later the new template is surely in the catalog.
    eventually(
        Duration::from_secs(10),
        "two more template list fetches",
        || t.sim.stats().apps[DEFAULT_APPID].template_list_calls >= listed_before + 2,
    )
    .await;
    newer["id"] = json!("r-after");
    t.publish(&newer).await;
    let o = t.outcome_of("r-after").await;
    assert_eq!(o["status"], "sent", "{o}");
    let gauge = t.ctx.metrics.render();
    assert!(
        gauge.contains(&format!(
            "wxcourier_catalog_templates{{app=\"{}\"}} 2",
            t.app
        )),
        "{gauge}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_catalog_jobs_go_unchecked_and_a_failed_refresh_keeps_the_last_one() {
    let sim = sim_with(vec![template(TEMPLATE, CONTENT)]).await;
    // The account may not list its templates (yet): the first fetch fails.
    sim.deny(DEFAULT_APPID, TEMPLATE_LIST, 48001);
    let mut t = spawn_app_on("catalog_down", sim, catalog_every(Duration::from_secs(1))).await;
    t.publish(&job("d-unchecked", &openid(1))).await;
    let o = t.outcome_of("d-unchecked").await;
    assert_eq!(
        o["status"], "sent",
        "sent unchecked while no catalog is loaded: {o}"
    );

    t.sim.deny(DEFAULT_APPID, TEMPLATE_LIST, 0);
    eventually(Duration::from_secs(10), "a template list fetch", || {
        t.sim.stats().apps[DEFAULT_APPID].template_list_calls >= 1
    })
    .await;
    t.sim.deny(DEFAULT_APPID, TEMPLATE_LIST, 48001);
    // Refreshes now fail, and the last good catalog stays in force.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.publish(&job("d-checked", &openid(2))).await;
    let o = t.outcome_of("d-checked").await;
    assert_eq!(o["status"], "rejected", "{o}");
    assert_eq!(t.take_dead(1).await.len(), 1);
    assert_eq!(t.sim.stats().apps[DEFAULT_APPID].template_list_calls, 1);
    assert_eq!(send_calls(&t.sim), 1, "only the unchecked job was sent");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_gauges_show_wechats_count_after_a_send() {
    let mut t = spawn_app("quota_gauge", |s| {
        s.wechat.daily_quota_refresh = wxcourier::types::Span(Duration::from_secs(1));
    })
    .await;
    t.publish(&job("q-1", &openid(1))).await;
    assert_eq!(t.outcome_of("q-1").await["status"], "sent");
    let line = |name: &str, n: u64| {
        format!(
            "wxcourier_wechat_quota_{name}{{app=\"{}\",endpoint=\"{TEMPLATE_SEND}\"}} {n}",
            t.app
        )
    };
    let (used, limit, remaining) = (
        line("used", 1),
        line("daily_limit", 1_000_000),
        line("remaining", 999_999),
    );
    eventually(
        Duration::from_secs(10),
        "the gauges to show one send",
        || {
            let text = t.ctx.metrics.render();
            text.contains(&used) && text.contains(&limit) && text.contains(&remaining)
        },
    )
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_wechat_will_not_give_leaves_the_gauges_unset() {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    sim.deny(DEFAULT_APPID, QUOTA_GET, 48001);
    let mut t = spawn_app_on("quota_denied", sim, |s| {
        s.wechat.daily_quota_refresh = wxcourier::types::Span(Duration::from_secs(1));
    })
    .await;
    t.publish(&job("qd-1", &openid(1))).await;
    assert_eq!(t.outcome_of("qd-1").await["status"], "sent");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = t.ctx.metrics.render();
    assert!(!text.contains("wxcourier_wechat_quota_used{"), "{text}");
    t.sim.deny(DEFAULT_APPID, QUOTA_GET, 0);
    let used = format!(
        "wxcourier_wechat_quota_used{{app=\"{}\",endpoint=\"{TEMPLATE_SEND}\"}} 1",
        t.app
    );
    eventually(
        Duration::from_secs(10),
        "the gauge once WeChat answers",
        || t.ctx.metrics.render().contains(&used),
    )
    .await;
    t.stop().await;
}
