//! The WeChat API simulator (CONTRACT §8): token endpoints, the send endpoints, quotas (and
//! `openapi/quota/get`), template lists, de-duplication and injectable faults, pushes of
//! delivery reports and of user events, with counts for tests and benchmarks.

mod lookups;
mod model;
mod platform;
mod platform_state;
pub mod push;
mod reports;
mod rules;
mod sends;
mod server;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

pub use lookups::{QUOTA_GET, TEMPLATE_LIST};
use model::Model;
pub use model::{
    Answer, AppStats, DEFAULT_APPID, DEFAULT_SECRET, Faults, QuotaCount, SendRecord, SimOptions,
    SimStats, SimTemplate,
};
pub use platform::PlatformControlError;
pub use platform_state::{PlatformFaults, PlatformStats, SimPlatform};
pub(crate) use push::CallbackTarget;
pub use push::{Decision, UserEvent};
pub use reports::UserEventError;
use tokio_util::sync::CancellationToken;

/// A running simulator. Dropping it does not stop it; call [`Simulator::stop`].
#[derive(Clone)]
pub struct Simulator {
    addr: SocketAddr,
    model: Arc<Model>,
    stop: CancellationToken,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free one) and serves in the background.
    pub async fn start(listen: &str, options: SimOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (model, pushes, counts) = Model::new(options);
        let model = Arc::new(model);
        tokio::spawn(push::run(pushes, counts));
        let stop = CancellationToken::new();
        tokio::spawn(push_tickets(model.clone(), stop.clone()));
        let app = server::router(model.clone());
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(Self { addr, model, stop })
    }

    /// The base URL to put in `wechat.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> SimStats {
        self.model.stats()
    }

    pub fn sends(&self) -> Vec<SendRecord> {
        self.model.sends()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.model.set_faults(faults);
    }

    /// The next sends to `touser` get these answers, in order, before normal service.
    pub fn script(&self, touser: &str, answers: Vec<Answer>) {
        self.model.script(touser, answers);
    }

    /// Every token of `appid` stops working at once.
    pub fn invalidate_tokens(&self, appid: &str) {
        self.model.invalidate(appid);
    }

    /// Pushes the result of `appid`'s accepted sends to `target` (`TEMPLATESENDJOBFINISH`, or
    /// `subscribe_msg_sent_event` for the subscribe kinds).
    pub fn set_callback(&self, appid: &str, target: Option<CallbackTarget>) {
        self.model.set_callback(appid, target);
    }

    /// Pushes `event` from `touser` to `appid`'s callback now, as WeChat would when the user
    /// answers a subscription popup, changes the message settings, or (un)follows. A template
    /// refused in it is answered 43101 for that user from then on; one accepted is sent again.
    pub fn push_user_event(
        &self,
        appid: &str,
        touser: &str,
        event: UserEvent,
    ) -> Result<(), UserEventError> {
        self.model.user_event(appid, touser, event)
    }

    /// Whether `touser` refuses every message (answered 43101) from now on.
    pub fn set_refusing(&self, touser: &str, refusing: bool) {
        self.model.set_refusing(touser, refusing);
    }

    /// Sets how many sends `appid` has left today.
    pub fn set_quota_left(&self, appid: &str, left: u64) {
        self.model.set_quota_left(appid, left);
    }

    /// Replaces `appid`'s template list.
    pub fn set_templates(&self, appid: &str, templates: Vec<SimTemplate>) {
        self.model.set_templates(appid, templates);
    }

    /// Makes the lookup `path` (the template list, `openapi/quota/get`) answer `errcode` to
    /// `appid`, or serve it again with 0.
    pub fn deny(&self, appid: &str, path: &str, errcode: i64) {
        self.model.deny(appid, path, errcode);
    }

    /// A merchant authorizes the platform `component` (again: an update), as by scanning its
    /// console link: WeChat pushes `authorized` (or `updateauthorized`) with a code, which
    /// this returns.
    pub fn authorize(
        &self,
        component: &str,
        authorizer: &str,
    ) -> Result<String, PlatformControlError> {
        self.model.authorize(component, authorizer)
    }

    /// A merchant withdraws the platform's authorization: WeChat pushes `unauthorized`.
    pub fn unauthorize(
        &self,
        component: &str,
        authorizer: &str,
    ) -> Result<(), PlatformControlError> {
        self.model.unauthorize(component, authorizer)
    }

    /// Pushes a new verify ticket to `component`'s event URL now.
    pub fn push_ticket(&self, component: &str) -> Result<(), PlatformControlError> {
        self.model.push_ticket(component)
    }

    pub fn set_platform_faults(
        &self,
        component: &str,
        faults: PlatformFaults,
    ) -> Result<(), PlatformControlError> {
        self.model.set_platform_faults(component, faults)
    }

    /// Each platform's counts of component calls, by component AppID.
    pub fn platform_stats(&self) -> std::collections::BTreeMap<String, PlatformStats> {
        self.model.platform_stats()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Every `ticket_interval`, a new verify ticket to each platform, as WeChat does every 10
/// minutes; the first one interval after start (a worker with no ticket asks for one).
async fn push_tickets(model: Arc<Model>, stop: CancellationToken) {
    let every = model.ticket_interval();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => model.push_tickets(),
        }
    }
}
