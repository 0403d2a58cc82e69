//! What an attempt's answer comes to: delivered, retried after a backoff, or a dead letter.

use std::time::Duration;

use http::StatusCode;

use crate::config::Retry;
use crate::forward::{UpstreamAnswer, UpstreamError};
use crate::spool::Attempted;

/// Turns an attempt's outcome into what the spool records. 2xx is delivered; 408, 429, 5xx and transport
/// failures are retried; any other status (3xx, other 4xx) cannot be fixed by retrying and is a dead letter
/// at once. A retry that would fall past `give_up_after` makes a dead letter instead. `random` is in [0, 1).
pub fn classify(
    answer: Result<UpstreamAnswer, UpstreamError>,
    attempt: u32,
    pending_since: i64,
    now: i64,
    retry: &Retry,
    random: f64,
) -> Attempted {
    let (status, error, answer_start, retry_after) = match answer {
        Ok(answer) if answer.status.is_success() => return Attempted::Delivered { status: answer.status.as_u16() },
        Ok(answer) => {
            let status = answer.status;
            let retryable = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            let error = format!("the upstream answered {status}");
            if !retryable {
                return Attempted::Dead { status: Some(status.as_u16()), error, answer: answer.body.to_vec() };
            }
            let retry_after = retry_after(&answer);
            (Some(status.as_u16()), error, answer.body.to_vec(), retry_after)
        }
        Err(error) => (None, error.to_string(), Vec::new(), None),
    };
    let delay = retry_after.map_or_else(|| backoff(retry, attempt, random), |hint| hint.min(retry.max_backoff));
    let next_attempt_at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let give_up_at = pending_since.saturating_add(i64::try_from(retry.give_up_after.as_millis()).unwrap_or(i64::MAX));
    if next_attempt_at > give_up_at {
        let error = format!(
            "gave up after {attempt} attempts (give_up_after {}): {error}",
            humantime::format_duration(retry.give_up_after)
        );
        return Attempted::Dead { status, error, answer: answer_start };
    }
    Attempted::Retry { next_attempt_at, status, error, answer: answer_start }
}

/// Exponential backoff with full jitter: a uniform wait in [0, min(max_backoff, initial_backoff × 2^(attempt−1))].
pub fn backoff(retry: &Retry, attempt: u32, random: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let ceiling = retry.initial_backoff.saturating_mul(1u32 << doublings.min(31)).min(retry.max_backoff);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// `Retry-After` in seconds on a 429 or 503 (an HTTP date is not honoured: backoff applies then).
fn retry_after(answer: &UpstreamAnswer) -> Option<Duration> {
    if answer.status != StatusCode::TOO_MANY_REQUESTS && answer.status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = answer.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName};

    const RETRY: Retry = Retry {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        give_up_after: Duration::from_secs(72 * 3600),
    };

    fn answer(status: u16, headers: &[(&str, &str)]) -> Result<UpstreamAnswer, UpstreamError> {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Ok(UpstreamAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::from_static(b"nope"),
        })
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        for attempt in 1..=64 {
            let ceiling = Duration::from_secs(1u64 << (attempt - 1).min(20)).min(RETRY.max_backoff);
            assert_eq!(backoff(&RETRY, attempt, 0.0), Duration::ZERO);
            assert_eq!(backoff(&RETRY, attempt, 1.0), ceiling, "attempt {attempt}");
            let middle = backoff(&RETRY, attempt, 0.5);
            assert!(middle <= ceiling && middle >= ceiling / 2 - Duration::from_millis(1), "attempt {attempt}");
        }
        assert_eq!(backoff(&RETRY, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&RETRY, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&RETRY, 10, 1.0), Duration::from_secs(300), "capped at max_backoff");
        assert_eq!(backoff(&RETRY, u32::MAX, 1.0), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn success_retry_and_dead_letter_statuses() {
        assert_eq!(classify(answer(200, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Delivered { status: 200 });
        assert_eq!(classify(answer(204, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Delivered { status: 204 });
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify(answer(status, &[]), 1, 0, 0, &RETRY, 0.5), Attempted::Retry { .. }), "{status}");
        }
        for status in [301, 302, 400, 401, 403, 404, 410, 422] {
            match classify(answer(status, &[]), 1, 0, 0, &RETRY, 0.5) {
                Attempted::Dead { status: Some(s), answer, .. } => {
                    assert_eq!(s, status);
                    assert_eq!(answer, b"nope");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        let timeout = classify(Err(UpstreamError::Timeout), 1, 0, 0, &RETRY, 0.5);
        assert!(matches!(timeout, Attempted::Retry { status: None, .. }));
        let refused = classify(Err(UpstreamError::Connect("refused".into())), 1, 0, 0, &RETRY, 0.5);
        assert!(matches!(refused, Attempted::Retry { status: None, .. }));
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_backoff() {
        let at = |r: Attempted| match r {
            Attempted::Retry { next_attempt_at, .. } => next_attempt_at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(classify(answer(429, &[("retry-after", "7")]), 1, 0, 1000, &RETRY, 0.0)), 8000);
        assert_eq!(at(classify(answer(503, &[("retry-after", "7")]), 1, 0, 1000, &RETRY, 0.0)), 8000);
        assert_eq!(at(classify(answer(429, &[("retry-after", "86400")]), 1, 0, 0, &RETRY, 0.0)), 300_000);
        // A date is not honoured: the jittered backoff (here 0) applies.
        assert_eq!(
            at(classify(answer(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), 1, 0, 0, &RETRY, 0.0)),
            0
        );
    }

    #[test]
    fn retries_end_in_a_dead_letter_after_give_up_after() {
        let give_up = i64::try_from(RETRY.give_up_after.as_millis()).unwrap();
        let late = classify(answer(503, &[]), 30, 0, give_up - 1000, &RETRY, 1.0);
        match late {
            Attempted::Dead { status: Some(503), error, .. } => {
                assert!(error.starts_with("gave up after 30 attempts"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(answer(503, &[]), 30, 0, give_up - 400_000, &RETRY, 1.0), Attempted::Retry { .. }));
    }
}
