//! Input rules of the contract (docs/design.md), each failing with the field it checked and
//! the rule it broke.

/// A broken input rule: which field, and what the rule is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct ValidationError {
    /// The request field, as named in the proto (e.g. `config.max_async_retry_attempts`).
    pub field: String,
    /// The rule, in words.
    pub rule: String,
    /// Whether the rule is a size limit.
    pub too_large: bool,
}

impl ValidationError {
    /// An error for `field` breaking `rule`.
    pub fn new(field: &str, rule: &str) -> Self {
        ValidationError {
            field: field.to_string(),
            rule: rule.to_string(),
            too_large: false,
        }
    }

    /// An error for `field` being larger than `rule` allows.
    pub fn too_large(field: &str, rule: &str) -> Self {
        ValidationError {
            too_large: true,
            ..ValidationError::new(field, rule)
        }
    }
}

/// Longest name, id or prefix.
pub const MAX_NAME_LEN: usize = 128;
/// Largest invoke payload in bytes (128 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_length(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            "must be at most 128 characters",
        ));
    }
    Ok(())
}

/// A service, function or qualifier name: 1-128 of letters, digits, `_` and `-`, starting
/// with a letter or `_`.
pub fn name(field: &str, value: &str) -> Result<(), ValidationError> {
    check_length(field, value)?;
    let starts_well = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !value.chars().all(is_name_char) {
        return Err(ValidationError::new(
            field,
            "must be 1-128 of letters, digits, '_' and '-', starting with a letter or '_'",
        ));
    }
    Ok(())
}

/// The qualifier: empty means LATEST, otherwise a name.
pub fn qualifier(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        Ok(())
    } else {
        name(field, value)
    }
}

/// A caller-chosen invocation id: `^[A-Za-z_][A-Za-z0-9_-]{0,127}$`. Never a digit first,
/// which keeps it apart from every id the service generates (see [`super::id`]).
pub fn new_invocation_id(field: &str, value: &str) -> Result<(), ValidationError> {
    name(field, value)
        .map_err(|_| ValidationError::new(field, "must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$"))
}

/// An id to look up: caller-chosen ids and generated UUIDs (which may start with a digit),
/// so 1-128 of letters, digits, `_` and `-`.
pub fn existing_invocation_id(field: &str, value: &str) -> Result<(), ValidationError> {
    check_length(field, value)?;
    if !value.chars().all(is_name_char) {
        return Err(ValidationError::new(
            field,
            "must be 1-128 of letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// An id prefix filter: empty, or up to 128 of letters, digits, `_` and `-`.
pub fn id_prefix(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.len() > MAX_NAME_LEN || !value.chars().all(is_name_char) {
        return Err(ValidationError::new(
            field,
            "must be at most 128 of letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// An account id (x-fc-account-id): 1-128 of letters, digits, `_` and `-`.
pub fn account_id(field: &str, value: &str) -> Result<(), ValidationError> {
    existing_invocation_id(field, value)
        .map_err(|_| ValidationError::new(field, "must be 1-128 of letters, digits, '_' and '-'"))
}

/// Largest return payload in bytes (1 MiB).
pub const MAX_RETURN_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest error message or invalid reason in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Text of at most `max` bytes.
pub fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::too_large(
            field,
            &format!("must be at most {max} bytes"),
        ));
    }
    Ok(())
}

/// A worker id: 1-128 printable characters (no control characters).
pub fn worker_id(field: &str, value: &str) -> Result<(), ValidationError> {
    check_length(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must be 1-128 printable characters",
        ));
    }
    Ok(())
}

/// Most entries one batch call (CompleteInvocations, InvokeFunctions) carries.
pub const MAX_BATCH: usize = 100;

/// A batch call's `field`: 1 to [`MAX_BATCH`] entries.
pub fn batch_count(field: &str, count: usize) -> Result<(), ValidationError> {
    if (1..=MAX_BATCH).contains(&count) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            &format!("must hold 1 to {MAX_BATCH} entries, not {count}"),
        ))
    }
}

/// A page size: 0 means `default`, otherwise it must be in [1, max].
pub fn limit(
    field: &str,
    value: i32,
    default: usize,
    max: usize,
) -> Result<usize, ValidationError> {
    match value {
        0 => Ok(default),
        v if v >= 1 && (v as usize) <= max => Ok(v as usize),
        _ => Err(ValidationError::new(
            field,
            &format!("must be between 1 and {max} (0 means the default, {default})"),
        )),
    }
}

/// A number in [min, max].
pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), ValidationError> {
    if value < min || value > max {
        return Err(ValidationError::new(
            field,
            &format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// An inclusive started-time window; 0 means unbounded on that side. Returns (begin, end).
pub fn time_range(
    begin_field: &str,
    begin: i64,
    end_field: &str,
    end: i64,
) -> Result<(Option<i64>, Option<i64>), ValidationError> {
    if begin < 0 {
        return Err(ValidationError::new(
            begin_field,
            "must be epoch milliseconds >= 0 (0 means no lower bound)",
        ));
    }
    if end < 0 {
        return Err(ValidationError::new(
            end_field,
            "must be epoch milliseconds >= 0 (0 means no upper bound)",
        ));
    }
    let begin = (begin > 0).then_some(begin);
    let end = (end > 0).then_some(end);
    if let (Some(b), Some(e)) = (begin, end) {
        if b > e {
            return Err(ValidationError::new(
                begin_field,
                &format!("must be <= {end_field}"),
            ));
        }
    }
    Ok((begin, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_fc_rule() {
        for ok in ["demo-service", "_x", "a", &"a".repeat(128), "Fn_1-2"] {
            assert!(name("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a.b", "a b", "ä", &"a".repeat(129)] {
            let err = name("service_name", bad).expect_err(bad);
            assert_eq!(err.field, "service_name");
        }
    }

    #[test]
    fn lookups_accept_generated_uuids_but_new_ids_must_start_with_a_letter() {
        let uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        assert!(new_invocation_id("id", "e026ae92-61e5-472f-b32d-1c9e3c4e1234").is_ok());
        assert!(existing_invocation_id("id", uuid).is_ok());
        assert!(new_invocation_id("id", uuid).is_err());
        assert!(new_invocation_id("id", "job-1").is_ok());
        assert!(existing_invocation_id("id", "a/b").is_err());
        assert!(existing_invocation_id("id", "").is_err());
    }

    #[test]
    fn limits_and_ranges() {
        assert_eq!(limit("limit", 0, 50, 100), Ok(50));
        assert_eq!(limit("limit", 100, 50, 100), Ok(100));
        assert!(limit("limit", 101, 50, 100).is_err());
        assert!(limit("limit", -1, 50, 100).is_err());
        assert_eq!(time_range("b", 0, "e", 0), Ok((None, None)));
        assert_eq!(time_range("b", 5, "e", 5), Ok((Some(5), Some(5))));
        assert_eq!(time_range("b", 6, "e", 5).expect_err("b > e").field, "b");
        assert_eq!(time_range("b", 0, "e", -1).expect_err("neg").field, "e");
        assert!(max_bytes("payload", &"x".repeat(MAX_PAYLOAD_BYTES), MAX_PAYLOAD_BYTES).is_ok());
        assert!(max_bytes(
            "payload",
            &"x".repeat(MAX_PAYLOAD_BYTES + 1),
            MAX_PAYLOAD_BYTES
        )
        .is_err());
    }
}
