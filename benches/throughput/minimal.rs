//! A minimal WeChat stand-in for `--wechat minimal`: every request gets a fixed answer by its
//! path (a token, a quota, or a send accepted with a fresh msgid), with no account, quota or
//! template checks and no body read beyond what HTTP needs. With the simulator's own costs
//! gone, the worker's costs weigh more against the floor's.

use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The endpoint on its own thread and runtime, as the simulator is a process of its own.
pub struct Minimal {
    pub base: String,
}

/// Every msgid a send gets, so no two sends share one.
static MSGID: AtomicU64 = AtomicU64::new(1);

impl Minimal {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener));
        });
        Self { base }
    }
}

async fn serve(listener: TcpListener) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin on the same error.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The fixed answer for a request's path. The body is not read: hyper drains it.
async fn answer(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let body = if path.ends_with("token") {
        r#"{"access_token":"minimal-token","expires_in":7200}"#.to_owned()
    } else if path.ends_with("quota/get") {
        r#"{"errcode":0,"errmsg":"ok","quota":{"daily_limit":100000000,"used":0,"remain":100000000}}"#
            .to_owned()
    } else {
        let msgid = MSGID.fetch_add(1, Ordering::Relaxed);
        format!(r#"{{"errcode":0,"errmsg":"ok","msgid":{msgid}}}"#)
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap())
}
