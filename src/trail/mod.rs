//! A job's story by its id: what happened to it, step by step (taken in, each try and its
//! wait, its end, WeChat's delivery report), kept for `state.trail_ttl` in the state backend,
//! so `wxcourier status` and the admin endpoint can answer "where is my message".
//!
//! `entry` is the wire form of one step and of the story; `memory` keeps stories in the
//! process; `store` reaches the configured backend and never lets a failure reach a job.

mod entry;
mod memory;
mod store;

pub use entry::{Entry, MAX_STEPS, StepName, Story};
pub use store::Trails;
