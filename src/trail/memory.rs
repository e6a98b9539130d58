//! Stories kept in the process, for memory state: bounded in jobs and in steps per job, the
//! oldest job dropped first, each forgotten `ttl` after its latest step.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::entry::{Entry, MAX_STEPS};

/// A job within its app.
type JobKey = (Box<str>, Box<str>);

struct Kept {
    steps: VecDeque<Entry>,
    touched: Instant,
}

struct Inner {
    jobs: HashMap<JobKey, Kept>,
    /// Jobs in the order they were first kept: the front is dropped first.
    order: VecDeque<JobKey>,
}

pub(crate) struct MemoryTrails {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

impl MemoryTrails {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                order: VecDeque::new(),
            }),
            ttl,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn append(&self, app: &str, id: &str, steps: &[Entry], now: Instant) {
        let mut inner = self.inner.lock();
        self.expire(&mut inner, now);
        let key: JobKey = (app.into(), id.into());
        let kept = match inner.jobs.get_mut(&key) {
            Some(kept) => kept,
            None => {
                while inner.order.len() >= self.capacity {
                    let Some(oldest) = inner.order.pop_front() else {
                        break;
                    };
                    inner.jobs.remove(&oldest);
                }
                inner.order.push_back(key.clone());
                inner.jobs.entry(key).or_insert(Kept {
                    steps: VecDeque::new(),
                    touched: now,
                })
            }
        };
        kept.touched = now;
        kept.steps.extend(steps.iter().cloned());
        while kept.steps.len() > MAX_STEPS {
            kept.steps.pop_front();
        }
    }

    pub(crate) fn read(&self, app: &str, id: &str, now: Instant) -> Vec<Entry> {
        let mut inner = self.inner.lock();
        self.expire(&mut inner, now);
        let key: JobKey = (app.into(), id.into());
        match inner.jobs.get(&key) {
            Some(kept) if now.duration_since(kept.touched) < self.ttl => {
                kept.steps.iter().cloned().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Drops jobs from the front whose latest step is older than `ttl`. A job at the front
    /// touched since waits there until the capacity or its own time drops it: the scan stays
    /// at the front, never a walk through every job.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(front) = inner.order.front() {
            let stale = inner
                .jobs
                .get(front)
                .is_none_or(|k| now.duration_since(k.touched) >= self.ttl);
            if !stale {
                break;
            }
            let front = inner.order.pop_front().expect("front exists");
            inner.jobs.remove(&front);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::StepName;

    fn step(n: u64) -> Entry {
        Entry::new(time::OffsetDateTime::UNIX_EPOCH, StepName::Attempt).with("n", n)
    }

    #[test]
    fn steps_are_kept_per_job_in_order_and_bounded_per_job() {
        let trails = MemoryTrails::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        trails.append("shop", "j1", &[step(0), step(1)], now);
        trails.append("shop", "j2", &[step(9)], now);
        trails.append("other", "j1", &[step(7)], now);
        let ns = |v: Vec<Entry>| -> Vec<u64> {
            v.iter().map(|e| e.detail["n"].as_u64().unwrap()).collect()
        };
        assert_eq!(ns(trails.read("shop", "j1", now)), [0, 1]);
        assert_eq!(ns(trails.read("other", "j1", now)), [7]);
        for n in 2..(MAX_STEPS as u64 + 10) {
            trails.append("shop", "j1", &[step(n)], now);
        }
        let kept = ns(trails.read("shop", "j1", now));
        assert_eq!(kept.len(), MAX_STEPS);
        assert_eq!(
            kept.last(),
            Some(&(MAX_STEPS as u64 + 9)),
            "the newest stay"
        );
    }

    #[test]
    fn beyond_its_capacity_the_oldest_job_goes_first() {
        let trails = MemoryTrails::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        for id in ["a", "b", "c", "d"] {
            trails.append("shop", id, &[step(0)], now);
        }
        assert_eq!(trails.len(), 3);
        assert!(trails.read("shop", "a", now).is_empty());
        assert_eq!(trails.read("shop", "d", now).len(), 1);
    }

    #[test]
    fn a_story_is_forgotten_ttl_after_its_latest_step() {
        let ttl = Duration::from_secs(60);
        let trails = MemoryTrails::new(ttl, 10);
        let start = Instant::now();
        trails.append("shop", "old", &[step(0)], start);
        trails.append("shop", "busy", &[step(0)], start);
        let later = start + Duration::from_secs(50);
        trails.append("shop", "busy", &[step(1)], later);
        let past = start + ttl + Duration::from_secs(1);
        assert!(trails.read("shop", "old", past).is_empty());
        assert_eq!(trails.read("shop", "busy", past).len(), 2, "touched since");
        assert!(trails.read("shop", "busy", later + ttl).is_empty());
        assert_eq!(trails.len(), 0, "both dropped, not only hidden");
    }
}
