//! A function's async invoke config (FC's AsyncConfig) and destination ARNs.

use serde::{Deserialize, Serialize};

use super::validate::{self, ValidationError};

/// Retries after a failed attempt when the config does not say.
pub const DEFAULT_MAX_RETRY_ATTEMPTS: i64 = 3;
/// Largest `max_async_retry_attempts`.
pub const MAX_RETRY_ATTEMPTS: i64 = 8;
/// Seconds an invocation may wait for dispatch when the config does not say (one day).
pub const DEFAULT_MAX_EVENT_AGE_SECONDS: i64 = 86_400;
/// Largest `max_async_event_age_in_seconds` (seven days).
pub const MAX_EVENT_AGE_SECONDS: i64 = 604_800;

/// The settings of a config; absent numbers take the defaults above.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AsyncInvokeConfig {
    /// Seconds before an undispatched invocation expires, [1, 604800].
    pub max_async_event_age_in_seconds: Option<i64>,
    /// Retries after a failed attempt, [0, 8].
    pub max_async_retry_attempts: Option<i64>,
    /// Receives a record after success.
    pub on_success: Option<DestinationArn>,
    /// Receives a record after failure or expiry.
    pub on_failure: Option<DestinationArn>,
    /// Whether records are kept; absent means true.
    pub stateful_invocation: Option<bool>,
}

impl AsyncInvokeConfig {
    /// Refuse a destination that is the function the config is for: every result would be
    /// a new invocation of it, and so on without end. `field_prefix` names the message the
    /// destinations sit in.
    pub fn refuse_own_destination(
        &self,
        field_prefix: &str,
        service: &str,
        function: &str,
    ) -> Result<(), ValidationError> {
        for (field, destination) in [
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
        ] {
            if let Some(arn) = destination {
                if arn.service == service && arn.function == function {
                    return Err(ValidationError::new(
                        &format!("{field_prefix}{field}.destination"),
                        "must not be the function the config is for: each result would invoke it again, without end",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check the ranges; `field_prefix` names the message the fields sit in.
    pub fn validate(&self, field_prefix: &str) -> Result<(), ValidationError> {
        if let Some(age) = self.max_async_event_age_in_seconds {
            validate::in_range(
                &format!("{field_prefix}max_async_event_age_in_seconds"),
                age,
                1,
                MAX_EVENT_AGE_SECONDS,
            )?;
        }
        if let Some(retries) = self.max_async_retry_attempts {
            validate::in_range(
                &format!("{field_prefix}max_async_retry_attempts"),
                retries,
                0,
                MAX_RETRY_ATTEMPTS,
            )?;
        }
        Ok(())
    }

    /// Effective max event age in seconds.
    pub fn max_event_age_seconds(&self) -> i64 {
        self.max_async_event_age_in_seconds
            .unwrap_or(DEFAULT_MAX_EVENT_AGE_SECONDS)
    }

    /// Effective retry attempts.
    pub fn max_retry_attempts(&self) -> i64 {
        self.max_async_retry_attempts
            .unwrap_or(DEFAULT_MAX_RETRY_ATTEMPTS)
    }

    /// Effective task mode.
    pub fn is_stateful(&self) -> bool {
        self.stateful_invocation.unwrap_or(true)
    }
}

/// A config as stored, with its server-set times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// The settings.
    pub config: AsyncInvokeConfig,
    /// When first put, epoch ms.
    pub created_time_ms: i64,
    /// When last put, epoch ms.
    pub last_modified_time_ms: i64,
}

/// A parsed FC function ARN:
/// `acs:fc:{region}:{account}:services/{service}[.{qualifier}]/functions/{function}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationArn {
    /// The ARN as given.
    pub arn: String,
    /// Region; may be empty.
    pub region: String,
    /// Account; empty means the caller's own.
    pub account: String,
    /// Target service.
    pub service: String,
    /// Target qualifier; None means LATEST.
    pub qualifier: Option<String>,
    /// Target function.
    pub function: String,
}

impl DestinationArn {
    /// Parse and check an ARN given in field `field` by account `caller_account`: the names
    /// must follow the name rules and the account, if given, must be the caller's.
    pub fn parse(field: &str, arn: &str, caller_account: &str) -> Result<Self, ValidationError> {
        const SHAPE: &str =
            "must be acs:fc:{region}:{account}:services/{service}[.{qualifier}]/functions/{function}";
        let bad = |rule: &str| ValidationError::new(field, rule);
        let rest = arn.strip_prefix("acs:fc:").ok_or_else(|| bad(SHAPE))?;
        let mut parts = rest.splitn(3, ':');
        let (region, account, resource) = match (parts.next(), parts.next(), parts.next()) {
            (Some(r), Some(a), Some(res)) => (r, a, res),
            _ => return Err(bad(SHAPE)),
        };
        let resource = resource
            .strip_prefix("services/")
            .ok_or_else(|| bad(SHAPE))?;
        let (service_part, function) = resource
            .split_once("/functions/")
            .ok_or_else(|| bad(SHAPE))?;
        let (service, qualifier) = match service_part.split_once('.') {
            Some((s, q)) => (s, Some(q)),
            None => (service_part, None),
        };
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(
                "region may hold only lowercase letters, digits and '-'",
            ));
        }
        if !account.is_empty() {
            validate::account_id(field, account)?;
            if account != caller_account {
                return Err(bad("must name a function of the caller's own account"));
            }
        }
        validate::name(field, service).map_err(|e| bad(&format!("service {}", e.rule)))?;
        if let Some(q) = qualifier {
            validate::name(field, q).map_err(|e| bad(&format!("qualifier {}", e.rule)))?;
        }
        validate::name(field, function).map_err(|e| bad(&format!("function {}", e.rule)))?;
        Ok(DestinationArn {
            arn: arn.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            service: service.to_string(),
            qualifier: qualifier.map(str::to_string),
            function: function.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qualified_and_blank_region_arns() {
        let arn = DestinationArn::parse(
            "f",
            "acs:fc:cn-hangzhou:acct:services/demo-service.prod/functions/sink",
            "acct",
        )
        .expect("valid");
        assert_eq!(arn.region, "cn-hangzhou");
        assert_eq!(arn.service, "demo-service");
        assert_eq!(arn.qualifier.as_deref(), Some("prod"));
        assert_eq!(arn.function, "sink");
        let blank = DestinationArn::parse("f", "acs:fc:::services/s/functions/f", "acct")
            .expect("blank region and account");
        assert_eq!(blank.qualifier, None);
        assert_eq!(blank.account, "");
    }

    #[test]
    fn a_function_cannot_be_its_own_destination() {
        let to = |arn: &str| DestinationArn::parse("f", arn, "acct").expect("valid");
        let own = AsyncInvokeConfig {
            on_failure: Some(to("acs:fc:::services/s.prod/functions/f")),
            ..AsyncInvokeConfig::default()
        };
        let err = own
            .refuse_own_destination("config.", "s", "f")
            .expect_err("itself");
        assert!(
            err.to_string().contains("config.on_failure.destination"),
            "{err}"
        );
        let other = AsyncInvokeConfig {
            on_success: Some(to("acs:fc:::services/s/functions/sink")),
            ..AsyncInvokeConfig::default()
        };
        assert!(other.refuse_own_destination("config.", "s", "f").is_ok());
    }

    #[test]
    fn refuses_malformed_and_foreign_arns() {
        for bad in [
            "",
            "acs:mns:::/queues/q/messages",
            "acs:fc::",
            "acs:fc:::functions/f",
            "acs:fc:::services/s/fn/f",
            "acs:fc:::services/s/functions/",
            "acs:fc:::services/9s/functions/f",
            "acs:fc:::services/s./functions/f",
            "acs:fc:CN:acct:services/s/functions/f",
            "acs:fc::other:services/s/functions/f",
        ] {
            let err = DestinationArn::parse("dest", bad, "acct").expect_err(bad);
            assert_eq!(err.field, "dest");
        }
    }

    #[test]
    fn ranges_are_checked_and_defaults_apply() {
        let cfg = AsyncInvokeConfig::default();
        assert_eq!(cfg.max_retry_attempts(), 3);
        assert_eq!(cfg.max_event_age_seconds(), 86_400);
        assert!(cfg.is_stateful());
        for (age, retries, ok) in [
            (Some(1), Some(0), true),
            (Some(604_800), Some(8), true),
            (Some(0), None, false),
            (Some(604_801), None, false),
            (None, Some(-1), false),
            (None, Some(9), false),
        ] {
            let cfg = AsyncInvokeConfig {
                max_async_event_age_in_seconds: age,
                max_async_retry_attempts: retries,
                ..Default::default()
            };
            assert_eq!(cfg.validate("config.").is_ok(), ok, "{age:?} {retries:?}");
        }
    }
}
