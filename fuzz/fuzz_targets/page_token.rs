//! Arbitrary strings as page tokens. Decoding must never panic, and no token that was not
//! made by the signer for this exact list may be accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sai::internals::page::{PageSigner, KIND_CONFIGS, KIND_FUNCTIONS, KIND_INVOCATIONS_ASC};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let signer = PageSigner::new([7; 32]);
    let scope = ["acct", "svc", "fn"];
    for (kind, count) in [
        (KIND_INVOCATIONS_ASC, 2),
        (KIND_FUNCTIONS, 3),
        (KIND_CONFIGS, 1),
    ] {
        if let Ok(parts) = signer.decode("next_token", token, kind, &scope, count) {
            // Only a token the signer made round-trips: re-encoding gives the same token.
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            assert_eq!(signer.encode(kind, &scope, &parts), token);
        }
    }
    // A token made for one list never opens another.
    let made = signer.encode(KIND_INVOCATIONS_ASC, &scope, &["1", token]);
    assert!(signer
        .decode(
            "next_token",
            &made,
            KIND_INVOCATIONS_ASC,
            &["other", "svc", "fn"],
            2
        )
        .is_err());
});
