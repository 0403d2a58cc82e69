//! The topic matcher: any pattern against any topic. A pattern without `*` matches exactly itself; `*`
//! matches every topic; a pattern always matches its own text with each `*` taken as empty; matching stays
//! linear (libFuzzer's timeout catches a blow-up).
#![no_main]

use hookgate::route::{TopicPattern, is_valid_topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (pattern, topic) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let (Ok(pattern), Ok(topic)) = (std::str::from_utf8(pattern), std::str::from_utf8(topic)) else { return };
    let _ = is_valid_topic(topic.as_bytes());
    let Ok(parsed) = TopicPattern::parse(pattern) else { return };
    let matched = parsed.matches(topic);
    if !pattern.contains('*') {
        assert_eq!(matched, pattern == topic);
    }
    assert!(TopicPattern::parse("*").unwrap().matches(topic));
    assert!(parsed.matches(&pattern.replace('*', "")));
});
