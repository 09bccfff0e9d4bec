//! The names a REST caller gave the request fields that the gRPC service names in its
//! refusals. The service knows fields by their proto names (`started_time_begin`,
//! `config.max_async_retry_attempts`); a caller of FC's REST API sent `startedTimeBegin` in
//! the query or `maxAsyncRetryAttempts` in the body, and a refusal should name what it sent.

/// Where an operation's fields came from, where that differs from the general rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    /// InvokeFunction: the id is a header and the payload is the body.
    Invoke,
    /// Every other operation: query parameters and path parts in camelCase, a put config's
    /// body holding the config's fields at its top level.
    Other,
}

/// The REST name of the request field the service calls `field`.
pub(super) fn rest_field(naming: Naming, field: &str) -> String {
    match (naming, field) {
        (Naming::Invoke, "invocation_id") => "X-Fc-Stateful-Async-Invocation-Id".to_string(),
        (Naming::Invoke, "payload") | (_, "config") => "body".to_string(),
        // The list's query parameter `status` fills the request's status name.
        (_, "status_name") => "status".to_string(),
        _ => {
            let field = field.strip_prefix("config.").unwrap_or(field);
            field
                .split('.')
                .map(lower_camel)
                .collect::<Vec<_>>()
                .join(".")
        }
    }
}

/// `rule` with the proto field names it mentions (`must be <= started_time_end`) renamed as
/// [`rest_field`] does. Only the rule's own words are renamed: a value the caller sent, which
/// a rule quotes (`"a_b" is not a status`), is left as it was.
pub(super) fn rest_rule(naming: Naming, rule: &str) -> String {
    let mut renamed = String::with_capacity(rule.len());
    let mut word = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in rule.chars() {
        let in_word = !quoted && (c.is_ascii_lowercase() || c == '_' || c == '.');
        if in_word {
            word.push(c);
            continue;
        }
        flush_word(naming, &mut word, &mut renamed);
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            quoted = true;
        }
        renamed.push(c);
    }
    flush_word(naming, &mut word, &mut renamed);
    renamed
}

/// Append `word` to `out`, renamed if it is a field name, and empty it.
fn flush_word(naming: Naming, word: &mut String, out: &mut String) {
    if is_proto_field_name(word) {
        out.push_str(&rest_field(naming, word));
    } else {
        out.push_str(word);
    }
    word.clear();
}

/// Whether `word` has the shape of a proto field name of more than one word: lowercase words
/// joined by single underscores (`started_time_end`), in a dotted path or not.
fn is_proto_field_name(word: &str) -> bool {
    word.contains('_')
        && word
            .split('.')
            .all(|part| part.split('_').all(|w| !w.is_empty()))
}

/// `started_time_begin` as protobuf's JSON names it: `startedTimeBegin`.
fn lower_camel(name: &str) -> String {
    let mut camel = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            camel.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    camel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_as_the_rest_caller_sent_them() {
        let other = |field| rest_field(Naming::Other, field);
        assert_eq!(other("started_time_begin"), "startedTimeBegin");
        assert_eq!(other("next_token"), "nextToken");
        assert_eq!(other("invocation_id_prefix"), "invocationIdPrefix");
        assert_eq!(other("status_name"), "status");
        assert_eq!(other("limit"), "limit");
        assert_eq!(other("service_name"), "serviceName");
        assert_eq!(other("invocation_id"), "invocationId");
        assert_eq!(
            other("config.max_async_retry_attempts"),
            "maxAsyncRetryAttempts"
        );
        assert_eq!(
            other("config.destination_config.on_success.destination"),
            "destinationConfig.onSuccess.destination"
        );
        assert_eq!(other("config"), "body");
        // Names the REST layer already gave stay as they are.
        assert_eq!(other("statefulInvocation"), "statefulInvocation");
        assert_eq!(other("x-fc-account-id"), "x-fc-account-id");

        let invoke = |field| rest_field(Naming::Invoke, field);
        assert_eq!(invoke("invocation_id"), "X-Fc-Stateful-Async-Invocation-Id");
        assert_eq!(invoke("payload"), "body");
        assert_eq!(invoke("function_name"), "functionName");
    }

    #[test]
    fn a_rule_renames_its_own_field_names_and_leaves_what_it_quotes() {
        let rule = |text| rest_rule(Naming::Other, text);
        assert_eq!(
            rule("must be <= started_time_end"),
            "must be <= startedTimeEnd"
        );
        assert_eq!(
            rule(r#""queued_up" is not a status (Enqueued, Dequeued)"#),
            r#""queued_up" is not a status (Enqueued, Dequeued)"#
        );
        assert_eq!(
            rule(r#""a \"b_c\" d_e" names next_token"#),
            r#""a \"b_c\" d_e" names nextToken"#
        );
        let unchanged = [
            "must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$",
            "must be 1-128 of letters, digits, '_' and '-', starting with a letter or '_'",
            "must be acs:fc:{region}:{account}:services/{service}[.{qualifier}]/functions/{function}",
            "must be between 1 and 100 (0 means the default, 50)",
            "",
        ];
        for text in unchanged {
            assert_eq!(rule(text), text);
        }
    }
}
