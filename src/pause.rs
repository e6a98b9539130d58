//! The per-app 45009 pause: once WeChat says an app's quota is spent, that app stops sending
//! (its consumer is cancelled, jobs wait in the broker) for `retry.pause`, doubling up to
//! `retry.max_pause` while WeChat keeps saying so; one probe send ends the pause.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::retry::Schedule;

/// Where an app stands with its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Sending normally.
    Open,
    /// Not sending until then.
    Paused { until: Instant },
    /// The pause is over and one send is testing whether the quota is back.
    Probing,
}

#[derive(Clone, Copy, Debug)]
struct GateState {
    phase: Phase,
    /// 45009 pauses in a row, for the doubling.
    strikes: u32,
}

/// What a job about to be sent may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send; `probe` is set for the one send that tests a spent quota.
    Send { probe: bool },
    /// The app is paused: hand the job back for this long.
    Wait(Duration),
}

/// One app's gate, shared by its consumer and every job in flight.
pub(crate) struct PauseGate {
    app: String,
    schedule: Schedule,
    /// 1 while paused (the `wxcourier_app_paused` metric).
    paused_gauge: Gauge,
    state: watch::Sender<GateState>,
}

impl PauseGate {
    pub(crate) fn new(app: &str, schedule: Schedule, paused_gauge: Gauge) -> Self {
        let (state, _) = watch::channel(GateState {
            phase: Phase::Open,
            strikes: 0,
        });
        Self {
            app: app.to_owned(),
            schedule,
            paused_gauge,
            state,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// Asks to send. While another job probes, waits for its answer instead of adding calls.
    pub(crate) async fn admit(&self) -> Admission {
        let mut changes = self.state.subscribe();
        loop {
            // Marked seen before deciding, so a change right after the decision still wakes us.
            changes.borrow_and_update();
            let mut decided = None;
            self.state.send_if_modified(|s| match s.phase {
                Phase::Open => {
                    decided = Some(Admission::Send { probe: false });
                    false
                }
                Phase::Paused { until } if Instant::now() < until => {
                    decided = Some(Admission::Wait(until - Instant::now()));
                    false
                }
                Phase::Paused { .. } => {
                    s.phase = Phase::Probing;
                    decided = Some(Admission::Send { probe: true });
                    true
                }
                Phase::Probing => false,
            });
            if let Some(admission) = decided {
                return admission;
            }
            if changes.changed().await.is_err() {
                return Admission::Send { probe: false };
            }
        }
    }

    /// WeChat answered 45009: pause the app (unless it already is) and say for how long.
    pub(crate) fn quota_spent(&self) -> Duration {
        let mut pause = Duration::ZERO;
        self.state.send_if_modified(|s| {
            if let Phase::Paused { until } = s.phase
                && until > Instant::now()
            {
                // Sends in flight when the pause began: the same pause, not a longer one.
                pause = until - Instant::now();
                return false;
            }
            s.strikes += 1;
            pause = self.schedule.pause(s.strikes);
            s.phase = Phase::Paused {
                until: Instant::now() + pause,
            };
            tracing::warn!(app = %self.app, pause = ?pause, strikes = s.strikes, "app paused: WeChat says its quota is spent (45009)");
            self.paused_gauge.set(1);
            true
        });
        pause
    }

    /// The app cannot send for another reason (no access token can be had): pause it for
    /// `pause` without touching the 45009 doubling, and say how long the pause now runs.
    pub(crate) fn pause_for(&self, pause: Duration, why: &str) -> Duration {
        let mut left = pause;
        self.state.send_if_modified(|s| {
            let until = Instant::now() + pause;
            if let Phase::Paused { until: current } = s.phase
                && current >= until
            {
                left = current - Instant::now();
                return false;
            }
            s.phase = Phase::Paused { until };
            tracing::warn!(app = %self.app, pause = ?pause, reason = why, "app paused");
            self.paused_gauge.set(1);
            true
        });
        left
    }

    /// WeChat gave any other answer. A probe's answer ends the pause.
    pub(crate) fn answered(&self, probe: bool) {
        self.state.send_if_modified(|s| match (s.phase, probe) {
            (Phase::Probing, true) => {
                tracing::info!(app = %self.app, "app resumed: WeChat accepts sends again");
                self.paused_gauge.set(0);
                *s = GateState {
                    phase: Phase::Open,
                    strikes: 0,
                };
                true
            }
            (Phase::Open, _) if s.strikes > 0 => {
                s.strikes = 0;
                false
            }
            _ => false,
        });
    }

    /// A probe got no answer at all (timeout, connection error): the next send probes again.
    pub(crate) fn probe_unanswered(&self) {
        self.state.send_if_modified(|s| {
            if s.phase != Phase::Probing {
                return false;
            }
            s.phase = Phase::Paused {
                until: Instant::now(),
            };
            true
        });
    }

    /// Resolves when the app is paused into the future (for its consumer to stop).
    pub(crate) async fn paused(&self) {
        let mut changes = self.state.subscribe();
        let _ = changes
            .wait_for(|s| matches!(s.phase, Phase::Paused { until } if until > Instant::now()))
            .await;
    }

    /// Resolves when the pause has run out (for the consumer to start again).
    pub(crate) async fn pause_over(&self) {
        loop {
            match self.phase() {
                Phase::Paused { until } if until > Instant::now() => {
                    tokio::time::sleep_until(until).await
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetrySettings;
    use crate::types::Span;
    use std::sync::Arc;

    fn gate() -> Arc<PauseGate> {
        let retry = RetrySettings {
            pause: Duration::from_secs(60).try_into().unwrap(),
            max_pause: Span(Duration::from_secs(200)),
            ..RetrySettings::default()
        };
        Arc::new(PauseGate::new("a", Schedule::new(&retry), Gauge::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_45009_pauses_and_the_pause_doubles_up_to_its_ceiling() {
        let g = gate();
        assert_eq!(g.admit().await, Admission::Send { probe: false });
        let mut pauses = Vec::new();
        for _ in 0..4 {
            pauses.push(g.quota_spent().as_secs());
            assert!(matches!(g.admit().await, Admission::Wait(_)));
            g.pause_over().await;
            assert_eq!(g.admit().await, Admission::Send { probe: true });
        }
        assert_eq!(pauses, [60, 120, 200, 200]);
        g.answered(true);
        assert_eq!(g.phase(), Phase::Open);
        assert_eq!(
            g.quota_spent().as_secs(),
            60,
            "the doubling starts over after a resume"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sends_in_flight_when_the_pause_began_do_not_lengthen_it() {
        let g = gate();
        let first = g.quota_spent();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = g.quota_spent();
        assert_eq!(first.as_secs(), 60);
        assert_eq!(second.as_secs(), 59);
    }

    #[tokio::test(start_paused = true)]
    async fn while_one_job_probes_the_others_wait_for_its_answer() {
        let g = gate();
        g.quota_spent();
        g.pause_over().await;
        assert_eq!(g.admit().await, Admission::Send { probe: true });
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.admit().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "no second call while probing");
        g.quota_spent();
        assert!(matches!(waiter.await.unwrap(), Admission::Wait(d) if d.as_secs() == 120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_lets_the_waiting_jobs_send() {
        let g = gate();
        g.quota_spent();
        g.pause_over().await;
        assert_eq!(g.admit().await, Admission::Send { probe: true });
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.admit().await })
        };
        tokio::task::yield_now().await;
        g.answered(true);
        assert_eq!(waiter.await.unwrap(), Admission::Send { probe: false });
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_probe_lets_the_next_send_probe() {
        let g = gate();
        g.quota_spent();
        g.pause_over().await;
        assert_eq!(g.admit().await, Admission::Send { probe: true });
        g.probe_unanswered();
        assert_eq!(g.admit().await, Admission::Send { probe: true });
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_for_a_missing_token_ends_with_a_probe_and_keeps_the_quota_doubling() {
        let g = gate();
        assert_eq!(g.pause_for(Duration::from_secs(4), "no token").as_secs(), 4);
        assert!(matches!(g.admit().await, Admission::Wait(_)));
        // A shorter pause asked for meanwhile does not cut the longer one.
        assert_eq!(g.pause_for(Duration::from_secs(1), "no token").as_secs(), 4);
        g.pause_over().await;
        assert_eq!(g.admit().await, Admission::Send { probe: true });
        g.answered(true);
        assert_eq!(g.phase(), Phase::Open);
        assert_eq!(g.quota_spent().as_secs(), 60, "45009 strikes untouched");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_from_before_the_pause_do_not_end_it() {
        let g = gate();
        g.quota_spent();
        g.answered(false);
        assert!(matches!(g.phase(), Phase::Paused { .. }));
    }
}
