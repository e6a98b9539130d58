//! The broker matrix's own check: the AMQP broker and the management API the tests are given
//! (`TEST_AMQP_URL`, `TEST_MANAGEMENT_URL`) are one and the same RabbitMQ, of the version the
//! leg expects (`TEST_RABBITMQ_VERSION`), so no leg of the matrix runs against the wrong broker.

mod common;

use common::*;

#[tokio::test]
async fn the_amqp_broker_and_the_management_api_under_test_are_the_same_rabbitmq() {
    let announced = broker_version().await;
    let parts: Vec<&str> = announced.split('.').collect();
    assert!(
        parts.len() >= 3 && parts[..3].iter().all(|p| p.parse::<u32>().is_ok()),
        "a RabbitMQ version: {announced}"
    );
    if let Ok(want) = std::env::var("TEST_RABBITMQ_VERSION") {
        assert!(announced.starts_with(&want), "{announced} is {want}…");
    }
    let url = reqwest::Url::parse(&management_url()).unwrap();
    // Credentials in the URL become an Authorization header of their own: send them once.
    let (user, password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let mut api = url.join("/api/overview").unwrap();
    api.set_username("").unwrap();
    api.set_password(None).unwrap();
    let overview: serde_json::Value = reqwest::Client::new()
        .get(api)
        .basic_auth(user, password)
        .send()
        .await
        .expect("the management API answers at TEST_MANAGEMENT_URL")
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overview["rabbitmq_version"], announced.as_str());
    let listeners = overview["listeners"].as_array().unwrap();
    let amqp_port: u64 = amqp_addr().rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| l["protocol"] == "amqp" && l["port"] == amqp_port),
        "the management API's node listens for AMQP on {amqp_port}: {listeners:?}"
    );
    eprintln!("broker under test: RabbitMQ {announced} at {}", amqp_addr());
}
