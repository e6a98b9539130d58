//! What the simulator holds for each third-party platform: its settings, the tickets, tokens
//! and codes it issued, its authorizers, its fault flags and its counts. `platform` answers
//! with them.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One third-party platform the simulator knows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SimPlatform {
    pub component_appid: String,
    pub secret: String,
    /// The message-check Token pushes are signed with.
    pub token: String,
    /// The EncodingAESKey pushes are sealed with.
    pub aes_key: String,
    /// The platform's authorization event URL; unset, nothing is pushed.
    #[serde(default)]
    pub event_url: Option<String>,
}

/// Faults of one platform, set on `POST /sim/platform/faults`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformFaults {
    /// `api_component_token` answers 61006 (the ticket is stale), whatever ticket comes.
    pub stale_ticket: bool,
    /// Ticket pushes are not sent (nor on `api_start_push_ticket`).
    pub lose_tickets: bool,
    /// `api_authorizer_token` answers 61023 (the refresh token is invalid).
    pub refuse_refresh: bool,
    /// `api_get_authorizer_list` leaves `refresh_token` out.
    pub list_without_refresh_token: bool,
    /// Sends with these authorizers' tokens answer 61007 (not granted to the platform).
    pub not_permitted: Vec<String>,
}

/// Calls counted per platform, for tests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PlatformStats {
    pub component_token_calls: u64,
    pub start_push_ticket_calls: u64,
    pub preauthcode_calls: u64,
    pub query_auth_calls: u64,
    pub authorizer_token_calls: u64,
    pub authorizer_list_calls: u64,
    pub tickets_pushed: u64,
}

pub(super) struct SimAuthorizer {
    pub(super) refresh_token: String,
    pub(super) funcs: Vec<u64>,
    pub(super) auth_time: u64,
}

/// One platform's state.
pub(super) struct Component {
    pub(super) platform: SimPlatform,
    /// Tickets issued, with when they stop being taken.
    pub(super) tickets: HashMap<String, Instant>,
    pub(super) component_tokens: HashMap<String, Instant>,
    pub(super) pre_auth_codes: HashMap<String, Instant>,
    /// Authorization codes: the authorizer each names, until when.
    pub(super) codes: HashMap<String, (String, Instant)>,
    pub(super) authorizers: BTreeMap<String, SimAuthorizer>,
    pub(super) faults: PlatformFaults,
    pub(super) stats: PlatformStats,
}

/// Every platform, by component AppID.
#[derive(Default)]
pub(super) struct Components(pub(super) HashMap<String, Component>);

impl Components {
    pub(super) fn new(platforms: &[SimPlatform]) -> Self {
        Self(
            platforms
                .iter()
                .map(|p| {
                    (
                        p.component_appid.clone(),
                        Component {
                            platform: p.clone(),
                            tickets: HashMap::new(),
                            component_tokens: HashMap::new(),
                            pre_auth_codes: HashMap::new(),
                            codes: HashMap::new(),
                            authorizers: BTreeMap::new(),
                            faults: PlatformFaults::default(),
                            stats: PlatformStats::default(),
                        },
                    )
                })
                .collect(),
        )
    }

    /// Whether sends with `appid`'s tokens are refused as not granted.
    pub(super) fn not_permitted(&self, appid: &str) -> bool {
        self.0
            .values()
            .any(|c| c.faults.not_permitted.iter().any(|a| a == appid))
    }
}
