//! Arbitrary strings as destination ARNs: parsing never panics, and what it accepts names the
//! caller's account (or none) and non-empty service and function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sai::model::DestinationArn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(arn) = DestinationArn::parse("destination", text, "caller") {
        assert!(arn.account.is_empty() || arn.account == "caller");
        assert!(!arn.service.is_empty() && !arn.function.is_empty());
        assert_eq!(arn.arn, text);
    }
});
