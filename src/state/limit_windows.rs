//! The send limits of one instance, in memory: each recipient's sliding window of sends and
//! each content's mark, decided under one lock so concurrent jobs see each other's slots.
//! Times are tokio's, so tests with paused time move the windows.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::send_limits::{LimitRequest, Reservation};

/// The sends in one recipient's window: when, and which job id holds each slot.
struct Window {
    per: Duration,
    sends: VecDeque<(Instant, Box<str>)>,
}

impl Window {
    /// Drops the sends that left the window.
    fn slide(&mut self, now: Instant) {
        while let Some((at, _)) = self.sends.front() {
            if now.duration_since(*at) < self.per {
                break;
            }
            self.sends.pop_front();
        }
    }
}

/// A content's mark: which job holds it, and until when.
struct Mark {
    until: Instant,
    id: Box<str>,
}

#[derive(Default)]
struct Windows {
    /// By (app, touser).
    recipients: HashMap<(Box<str>, Box<str>), Window>,
    /// By (app, digest).
    contents: HashMap<(Box<str>, Box<str>), Mark>,
    /// Entries after the last sweep: the next one comes when there are twice as many, so
    /// finished windows cost nothing per call and are still bounded.
    swept_at: usize,
}

/// How few entries never call for a sweep.
const SWEEP_FLOOR: usize = 1024;

/// Every app's send limits in this process.
#[derive(Default)]
pub(crate) struct LimitWindows {
    inner: Mutex<Windows>,
}

impl LimitWindows {
    pub(crate) fn reserve(&self, app: &str, r: &LimitRequest<'_>, now: Instant) -> Reservation {
        let mut w = self.inner.lock();
        w.sweep_if_grown(now);
        let content_key = r.content.map(|c| (Box::from(app), Box::from(c.digest)));
        if let Some(key) = &content_key
            && let Some(mark) = w.contents.get(key)
            && mark.until > now
            && *mark.id != *r.id
        {
            return Reservation::Duplicate;
        }
        if let Some(cap) = r.cap {
            let window = w
                .recipients
                .entry((app.into(), cap.touser.into()))
                .or_insert_with(|| Window {
                    per: cap.per,
                    sends: VecDeque::new(),
                });
            window.per = cap.per;
            window.slide(now);
            let holds_one = window.sends.iter().any(|(_, id)| **id == *r.id);
            if !holds_one {
                if window.sends.len() >= cap.count.get() as usize {
                    let oldest = window.sends.front().map_or(now, |(at, _)| *at);
                    let free_in = (oldest + cap.per).saturating_duration_since(now);
                    return Reservation::Capped {
                        free_in: free_in.max(Duration::from_millis(1)),
                    };
                }
                window.sends.push_back((now, r.id.into()));
            }
        }
        if let (Some(key), Some(c)) = (content_key, r.content) {
            let mark = Mark {
                until: now + c.window,
                id: r.id.into(),
            };
            w.contents.insert(key, mark);
        }
        Reservation::Granted
    }

    pub(crate) fn give_back(&self, app: &str, r: &LimitRequest<'_>) {
        let mut w = self.inner.lock();
        if let Some(cap) = r.cap
            && let Some(window) = w.recipients.get_mut(&(app.into(), cap.touser.into()))
        {
            window.sends.retain(|(_, id)| **id != *r.id);
        }
        if let Some(c) = r.content {
            let key: (Box<str>, Box<str>) = (app.into(), c.digest.into());
            if w.contents.get(&key).is_some_and(|m| *m.id == *r.id) {
                w.contents.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        let w = self.inner.lock();
        w.recipients.len() + w.contents.len()
    }
}

impl Windows {
    fn sweep_if_grown(&mut self, now: Instant) {
        let entries = self.recipients.len() + self.contents.len();
        if entries < SWEEP_FLOOR.max(self.swept_at * 2) {
            return;
        }
        self.recipients.retain(|_, window| {
            window.slide(now);
            !window.sends.is_empty()
        });
        self.contents.retain(|_, mark| mark.until > now);
        self.swept_at = self.recipients.len() + self.contents.len();
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::state::send_limits::{ContentWindow, RecipientCap};

    const DAY: Duration = Duration::from_secs(86_400);

    fn capped(id: &str, count: u32) -> LimitRequest<'_> {
        LimitRequest {
            id,
            cap: Some(RecipientCap {
                touser: "u1",
                count: NonZeroU32::new(count).unwrap(),
                per: DAY,
            }),
            content: None,
            gate: None,
        }
    }

    fn deduped(id: &str) -> LimitRequest<'_> {
        LimitRequest {
            id,
            cap: None,
            content: Some(ContentWindow {
                digest: "d1",
                window: Duration::from_secs(300),
            }),
            gate: None,
        }
    }

    #[test]
    fn a_full_window_refuses_until_its_oldest_send_leaves_it() {
        let w = LimitWindows::default();
        let t0 = Instant::now();
        assert_eq!(w.reserve("a", &capped("j1", 2), t0), Reservation::Granted);
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!(w.reserve("a", &capped("j2", 2), t1), Reservation::Granted);
        assert_eq!(
            w.reserve("a", &capped("j3", 2), t1),
            Reservation::Capped {
                free_in: DAY - Duration::from_secs(3600)
            }
        );
        // The window slides: j1 leaves it a day after it was sent, and j3 fits.
        assert_eq!(
            w.reserve("a", &capped("j3", 2), t0 + DAY),
            Reservation::Granted
        );
        assert!(matches!(
            w.reserve("a", &capped("j4", 2), t0 + DAY),
            Reservation::Capped { .. }
        ));
    }

    #[test]
    fn a_job_that_holds_a_slot_asks_again_without_taking_another() {
        let w = LimitWindows::default();
        let now = Instant::now();
        assert_eq!(w.reserve("a", &capped("j1", 2), now), Reservation::Granted);
        assert_eq!(w.reserve("a", &capped("j1", 2), now), Reservation::Granted);
        assert_eq!(w.reserve("a", &capped("j2", 2), now), Reservation::Granted);
    }

    #[test]
    fn a_slot_given_back_is_free_for_the_next_job_and_only_its_holder_gives_it_back() {
        let w = LimitWindows::default();
        let now = Instant::now();
        assert_eq!(w.reserve("a", &capped("j1", 1), now), Reservation::Granted);
        w.give_back("a", &capped("stranger", 1));
        assert!(matches!(
            w.reserve("a", &capped("j2", 1), now),
            Reservation::Capped { .. }
        ));
        w.give_back("a", &capped("j1", 1));
        assert_eq!(w.reserve("a", &capped("j2", 1), now), Reservation::Granted);
    }

    #[test]
    fn windows_are_per_app_and_per_recipient() {
        let w = LimitWindows::default();
        let now = Instant::now();
        assert_eq!(w.reserve("a", &capped("j1", 1), now), Reservation::Granted);
        assert_eq!(w.reserve("b", &capped("j1", 1), now), Reservation::Granted);
        let mut other = capped("j2", 1);
        other.cap.as_mut().unwrap().touser = "u2";
        assert_eq!(w.reserve("a", &other, now), Reservation::Granted);
    }

    #[test]
    fn equal_content_is_refused_within_its_window_to_any_other_id() {
        let w = LimitWindows::default();
        let t0 = Instant::now();
        assert_eq!(w.reserve("a", &deduped("j1"), t0), Reservation::Granted);
        assert_eq!(w.reserve("a", &deduped("j1"), t0), Reservation::Granted);
        assert_eq!(w.reserve("a", &deduped("j2"), t0), Reservation::Duplicate);
        assert_eq!(w.reserve("b", &deduped("j2"), t0), Reservation::Granted);
        let later = t0 + Duration::from_secs(300);
        assert_eq!(w.reserve("a", &deduped("j2"), later), Reservation::Granted);
    }

    #[test]
    fn a_duplicate_takes_no_slot_and_a_capped_job_leaves_no_mark() {
        let w = LimitWindows::default();
        let now = Instant::now();
        let both = |id| LimitRequest {
            content: deduped(id).content,
            ..capped(id, 1)
        };
        assert_eq!(w.reserve("a", &both("j1"), now), Reservation::Granted);
        assert_eq!(w.reserve("a", &both("j2"), now), Reservation::Duplicate);
        w.give_back("a", &both("j1"));
        // j2 took nothing when it was refused, so j3 finds both free; and j4, capped, leaves
        // the mark free for j5 (other content, same recipient, so capped too).
        assert_eq!(w.reserve("a", &both("j3"), now), Reservation::Granted);
        let mut other_content = capped("j4", 1);
        other_content.content = Some(ContentWindow {
            digest: "d2",
            window: Duration::from_secs(300),
        });
        assert!(matches!(
            w.reserve("a", &other_content, now),
            Reservation::Capped { .. }
        ));
        assert_eq!(w.reserve("a", &deduped("j5"), now), Reservation::Duplicate);
        let mut d2 = deduped("j6");
        d2.content.as_mut().unwrap().digest = "d2";
        assert_eq!(w.reserve("a", &d2, now), Reservation::Granted);
    }

    #[test]
    fn finished_windows_and_marks_are_swept_once_they_pile_up() {
        let w = LimitWindows::default();
        let t0 = Instant::now();
        for i in 0..SWEEP_FLOOR {
            let mut r = capped("j", 1);
            let touser = format!("u{i}");
            r.cap.as_mut().unwrap().touser = &touser;
            w.reserve("a", &r, t0);
        }
        assert_eq!(w.entries(), SWEEP_FLOOR);
        w.reserve("a", &capped("j", 1), t0 + DAY);
        assert_eq!(w.entries(), 1, "only the window just used is left");
    }
}
