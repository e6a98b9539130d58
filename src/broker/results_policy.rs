//! `results.keep_unrouted`: the policy that makes `wxcourier.results.unrouted` the alternate
//! exchange of `wxcourier.results`. A policy, because an exchange's arguments cannot change once
//! declared: declaring `wxcourier.results` again with an `alternate-exchange` argument would
//! fail on every deployment made before. The worker sets it through the management API (its
//! user needs the `policymaker` tag), or logs the command an operator runs; `check` reads it
//! back.

use super::management::{ManagementApi, ManagementError, Policy};
use super::names::{RESULTS_EXCHANGE, RESULTS_UNROUTED};
use crate::config::Settings;

/// The policy's name in the vhost.
pub const POLICY_NAME: &str = "wxcourier-results-unrouted";

/// The exchanges the policy applies to: `wxcourier.results` alone.
const POLICY_PATTERN: &str = r"^wxcourier\.results$";

/// The policy as the worker sets it.
pub(crate) fn policy() -> Policy {
    let mut definition = serde_json::Map::new();
    definition.insert("alternate-exchange".into(), RESULTS_UNROUTED.into());
    Policy {
        pattern: POLICY_PATTERN.into(),
        apply_to: "exchanges".into(),
        definition,
        priority: 0,
    }
}

/// What an operator runs to set the policy by hand, for the vhost `vhost`.
pub fn operator_command(vhost: &str) -> String {
    format!(
        "rabbitmqctl set_policy -p '{vhost}' --apply-to exchanges {POLICY_NAME} \
         '{POLICY_PATTERN}' '{{\"alternate-exchange\":\"{RESULTS_UNROUTED}\"}}'"
    )
}

/// Where `wxcourier.results`' alternate exchange stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AlternateExchange {
    /// The exchange does not exist yet (no worker has run).
    NoExchange,
    /// Results no queue takes go to `wxcourier.results.unrouted`; `by` says what set it.
    Kept { by: String },
    /// They go to another exchange, set by `by`: an operator's choice, left alone.
    Elsewhere { exchange: String, by: String },
    /// None is set: they are returned. `policy` is another policy in force on the exchange
    /// (a second one would replace it, so it is left alone too).
    Unset { policy: Option<String> },
}

/// Reads the alternate exchange of `wxcourier.results`: its own argument wins over a policy's,
/// as the broker has it.
pub(crate) async fn inspect(api: &ManagementApi) -> Result<AlternateExchange, ManagementError> {
    let Some(exchange) = api.exchange(RESULTS_EXCHANGE).await? else {
        return Ok(AlternateExchange::NoExchange);
    };
    let named = |ae: &serde_json::Value, by: String| match ae.as_str() {
        Some(RESULTS_UNROUTED) => AlternateExchange::Kept { by },
        other => AlternateExchange::Elsewhere {
            exchange: other.unwrap_or_default().to_owned(),
            by,
        },
    };
    if let Some(ae) = exchange.arguments.get("alternate-exchange") {
        return Ok(named(ae, "its own arguments".into()));
    }
    let Some(name) = exchange.policy else {
        return Ok(AlternateExchange::Unset { policy: None });
    };
    let in_force = api.policy(&name).await?;
    match in_force
        .as_ref()
        .and_then(|p| p.definition.get("alternate-exchange"))
    {
        Some(ae) => Ok(named(ae, format!("policy {name}"))),
        None => Ok(AlternateExchange::Unset { policy: Some(name) }),
    }
}

/// Once at start: with `results.keep_unrouted` on, sets the policy unless an alternate
/// exchange or another policy is already in force there (each said in a warning); with it
/// off, removes the policy of that name (an earlier run set it, or an operator by hand), so
/// what the config says holds. Without a management API it says what to run.
pub(crate) async fn apply_at_start(settings: &Settings) {
    let keep = settings.results.keep_unrouted;
    let api = match ManagementApi::from_settings(&settings.amqp) {
        Ok(api) => api,
        Err(e) if keep => {
            tracing::warn!(error = %e, "results.keep_unrouted: cannot reach the RabbitMQ management API to set the policy; run: {}", operator_command("/"));
            return;
        }
        Err(_) => return,
    };
    if keep {
        keep_unrouted(&api).await;
    } else {
        stop_keeping(&api).await;
    }
}

async fn keep_unrouted(api: &ManagementApi) {
    match inspect(api).await {
        Ok(AlternateExchange::Kept { by }) => {
            tracing::info!(by = %by, "results no queue takes are kept in {RESULTS_UNROUTED}");
            return;
        }
        Ok(AlternateExchange::Elsewhere { exchange, by }) => {
            tracing::warn!(alternate_exchange = %exchange, by = %by, "results.keep_unrouted: {RESULTS_EXCHANGE} already sends what no queue takes elsewhere; left as it is");
            return;
        }
        Ok(AlternateExchange::Unset {
            policy: Some(other),
        }) if other != POLICY_NAME => {
            tracing::warn!(policy = %other, "results.keep_unrouted: another policy is in force on {RESULTS_EXCHANGE}, and a second would replace it: add \"alternate-exchange\": \"{RESULTS_UNROUTED}\" to its definition");
            return;
        }
        // Not there yet, none in force, or ours without the key: set ours.
        Ok(_) | Err(_) => {}
    }
    match api.put_policy(POLICY_NAME, &policy()).await {
        Ok(()) => tracing::info!(
            policy = POLICY_NAME,
            "results no queue takes are kept in {RESULTS_UNROUTED}"
        ),
        Err(e) => tracing::warn!(
            management = %api.describe(),
            error = %e,
            "results.keep_unrouted: cannot set the policy (the management user needs the policymaker tag); results no queue takes are counted and dropped until an operator runs: {}",
            operator_command(api.vhost())
        ),
    }
}

async fn stop_keeping(api: &ManagementApi) {
    let Ok(Some(_)) = api.policy(POLICY_NAME).await else {
        return;
    };
    match api.delete_policy(POLICY_NAME).await {
        Ok(()) => tracing::info!(
            policy = POLICY_NAME,
            "results.keep_unrouted is off: removed the policy; results no queue takes are counted and dropped again"
        ),
        Err(e) => tracing::warn!(
            policy = POLICY_NAME,
            error = %e,
            "results.keep_unrouted is off but its policy could not be removed: results no queue takes still go to {RESULTS_UNROUTED}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_matches_the_results_exchange_alone_and_names_the_kept_exchange() {
        let p = policy();
        assert_eq!(p.apply_to, "exchanges");
        assert_eq!(p.definition["alternate-exchange"], RESULTS_UNROUTED);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["apply-to"], "exchanges");
        assert_eq!(json["pattern"], r"^wxcourier\.results$");
        let command = operator_command("prod");
        assert!(command.starts_with("rabbitmqctl set_policy -p 'prod' --apply-to exchanges wxcourier-results-unrouted '^wxcourier\\.results$'"), "{command}");
        assert!(
            command.ends_with(r#"'{"alternate-exchange":"wxcourier.results.unrouted"}'"#),
            "{command}"
        );
    }
}
