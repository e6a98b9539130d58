//! `amqps://` and `rediss://` with a private CA: a TLS front (its certificate signed by a CA
//! made for the test) forwards to the local RabbitMQ or Redis, so the worker's TLS handshake,
//! certificate check and AMQP or RESP over TLS all run for real.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::process::{Binary, OutputWithin};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wxcourier::config::{AmqpSettings, StateSettings};
use wxcourier::sim::{SimOptions, Simulator};
use wxcourier::state::State;
use wxcourier::types::Secret;

/// A CA and a broker certificate for `127.0.0.1` and `localhost`, signed by it.
struct TestPki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

fn make_pki() -> TestPki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wxcourier test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    TestPki {
        ca_pem,
        server_cert: server.der().clone(),
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

/// Terminates TLS on a free port and pipes each connection to a local service.
struct TlsFront {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The local Redis the `rediss://` fronts forward to.
const REDIS_ADDR: &str = "127.0.0.1:6379";

impl TlsFront {
    /// In front of the test broker.
    async fn start(pki: &TestPki) -> Self {
        Self::before(pki, common::amqp_addr()).await
    }

    /// In front of the service at `backend` (`host:port`).
    async fn before(pki: &TestPki, backend: String) -> Self {
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here, as it should.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut service = TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut service).await;
                });
            }
        });
        Self {
            port,
            handshakes,
            task,
        }
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rediss://` through this front; `password` only where the handshake is meant to fail
    /// (the local Redis has none and refuses `AUTH`), to show it is never echoed.
    fn redis_url(&self, password: Option<&str>) -> String {
        let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
        format!("rediss://{auth}127.0.0.1:{}/", self.port)
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn write_ca(pki: &TestPki) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &pki.ca_pem).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_delivers_over_amqps_trusting_a_custom_ca() {
    let pki = make_pki();
    let front = TlsFront::start(&pki).await;
    let ca = write_ca(&pki);
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let url = front.url();
    let ca_path = ca.path().to_string_lossy().into_owned();
    let mut t = spawn_app_on("tls", sim, |s| {
        s.amqp.url = Secret::new(url);
        s.amqp.ca_file = Some(ca_path);
    })
    .await;
    twenty_jobs_are_each_sent_once(&mut t).await;
    // The worker's consume and results channels both ride the TLS connection.
    assert!(front.handshakes() >= 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_unknown_ca_is_refused_without_leaking_the_url() {
    let pki = make_pki();
    let front = TlsFront::start(&pki).await;
    let settings = AmqpSettings {
        url: Secret::new(front.url()),
        ..AmqpSettings::default()
    };
    let err = wxcourier::broker::connect(&settings, "wxcourier test")
        .await
        .map(|_| ())
        .expect_err("a certificate no trusted CA signed must be refused")
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("guest"), "{err}");
    assert_eq!(front.handshakes(), 0);

    let missing = AmqpSettings {
        url: Secret::new(front.url()),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..AmqpSettings::default()
    };
    let err = wxcourier::broker::connect(&missing, "wxcourier test")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("amqp.ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_tls_broker_ok_only_with_the_ca() {
    let pki = make_pki();
    let front = TlsFront::start(&pki).await;
    let ca = write_ca(&pki);
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let bin = Binary::new(&unique_app("tlscheck"), &sim.base_url(), "");

    let without = bin
        .command("check")
        .env("WXCOURIER_AMQP__URL", front.url())
        .output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&without.stdout);
    assert_eq!(without.status.code(), Some(1), "{text}");
    assert!(text.contains("broker: FAILED"), "{text}");
    assert!(!text.contains("guest:guest"), "{text}");

    let with = bin
        .command("check")
        .env("WXCOURIER_AMQP__URL", front.url())
        .env("WXCOURIER_AMQP__CA_FILE", ca.path())
        .output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&with.stdout);
    assert_eq!(with.status.code(), Some(0), "{text}");
    assert!(text.contains("broker: ok"), "{text}");
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_shares_state_over_rediss_trusting_a_custom_ca() {
    let pki = make_pki();
    let front = TlsFront::before(&pki, REDIS_ADDR.into()).await;
    let ca = write_ca(&pki);
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let url = front.redis_url(None);
    let ca_path = ca.path().to_string_lossy().into_owned();
    let mut t = spawn_app_on("rediss", sim, |s| {
        s.state.url = Secret::new(url);
        s.state.ca_file = Some(ca_path);
    })
    .await;
    let ids = twenty_jobs_are_each_sent_once(&mut t).await;
    assert!(front.handshakes() >= 1);
    // The sent ids went to the real Redis through the TLS front.
    let plain = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut conn = plain.get_multiplexed_async_connection().await.unwrap();
    let first = ids.iter().next().unwrap();
    let held: Option<String> = redis::cmd("GET")
        .arg(format!("wxcourier:{{{}}}:id:{first}", t.app))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        held.is_some_and(|msgid| msgid.parse::<u64>().is_ok()),
        "{first} is recorded in Redis with its msgid"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_from_an_unknown_ca_is_refused_without_leaking_the_password() {
    let pki = make_pki();
    let front = TlsFront::before(&pki, REDIS_ADDR.into()).await;
    let other = write_ca(&make_pki());
    for ca_file in [None, Some(other.path().to_string_lossy().into_owned())] {
        let settings = StateSettings {
            url: Secret::new(front.redis_url(Some("hunter2"))),
            ca_file,
            ..StateSettings::default()
        };
        let state = State::from_settings(&settings, Duration::from_secs(60)).unwrap();
        let err = state.ping().await.unwrap_err().to_string();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert_eq!(front.handshakes(), 0);

    let missing = StateSettings {
        url: Secret::new(front.redis_url(None)),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..StateSettings::default()
    };
    let err = State::from_settings(&missing, Duration::from_secs(60))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.ca_file"), "{err}");
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate").unwrap();
    let bad = StateSettings {
        ca_file: Some(not_pem.path().to_string_lossy().into_owned()),
        ..missing
    };
    let err = State::from_settings(&bad, Duration::from_secs(60))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_rediss_ok_only_with_the_ca() {
    let pki = make_pki();
    let front = TlsFront::before(&pki, REDIS_ADDR.into()).await;
    let ca = write_ca(&pki);
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let bin = Binary::new(&unique_app("redischeck"), &sim.base_url(), "");

    let without = bin
        .command("check")
        .env("WXCOURIER_STATE__URL", front.redis_url(None))
        .output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&without.stdout);
    assert_eq!(without.status.code(), Some(1), "{text}");
    assert!(text.contains("state: FAILED"), "{text}");

    let with = bin
        .command("check")
        .env("WXCOURIER_STATE__URL", front.redis_url(None))
        .env("WXCOURIER_STATE__CA_FILE", ca.path())
        .output_within(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&with.stdout);
    assert_eq!(with.status.code(), Some(0), "{text}");
    assert!(text.contains("state: ok"), "{text}");
    sim.stop();
}

/// Publishes 20 jobs through `t` and checks each is sent, and accepted by WeChat, once.
async fn twenty_jobs_are_each_sent_once(t: &mut TestApp) -> std::collections::HashSet<String> {
    let ids = t.publish_numbered(20).await;
    let outcomes = t.outcomes(20).await;
    assert_eq!(outcomes.len(), 20);
    assert!(
        outcomes.iter().all(|o| o["status"] == "sent"),
        "{outcomes:?}"
    );
    assert_each_job_accepted_once(&t.sim, &ids);
    ids
}
