//! The ping body parser: `webhook_id=<id>` and nothing else. Whatever it accepts prints back to the same
//! bytes, so no two spellings of one id pass an allow-list differently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = hookgate::woocommerce::ping_webhook_id(data) {
        assert_eq!(format!("webhook_id={id}").as_bytes(), data);
    }
    if let Some(id) = hookgate::woocommerce::parse_webhook_id(data) {
        assert_eq!(id.to_string().as_bytes(), data);
    }
});
