//! The config parser: any text. It returns a config or errors, never panics, and its errors render.
//! A secret in a `secrets` entry, however the entry is spelled, never appears in an error's text.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-Q7w9Zr";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = std::path::Path::new("fuzz.yaml");
    if let Err(error) = hookgate::config::Config::from_yaml(text, path) {
        let _ = error.to_string();
    }
    // The same text with a known secret spliced into a source, in one of YAML's spellings of the entry
    // (chosen by the input's length): errors must not quote it.
    let entry = match text.len() % 5 {
        0 => format!("- value: \"{SECRET}\""),
        1 => format!("- \"value\": {SECRET}"),
        2 => format!("- {{value: '{SECRET}'}}"),
        3 => format!("- value : {SECRET}"),
        _ => format!("- {SECRET}"),
    };
    let with_secret = format!("sources:\n  - name: s\n    path: /p\n    secrets:\n      {entry}\n{text}");
    if let Err(error) = hookgate::config::Config::from_yaml(&with_secret, path) {
        let rendered = error.to_string();
        if !text.contains(SECRET) {
            assert!(!rendered.contains(SECRET), "an error quoted the secret: {rendered}");
        }
    }
});
