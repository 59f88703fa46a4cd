//! SPIFFE IDs (`mesh/src/identity/spiffe.rs`) and bootstrap tokens
//! (`mesh/src/identity/token.rs`), both read from what callers present. An
//! ID that parses is exactly `spiffe://td/ns/x/sa/y`, and its parts build it
//! again; a token that verifies names an identity the rules allow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weft_mesh::identity::token::Tokens;
use weft_mesh::identity::SpiffeId;

fn tokens() -> &'static Tokens {
    static T: OnceLock<Tokens> = OnceLock::new();
    T.get_or_init(|| Tokens::from_ca_key("fuzz key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string(), s);
        let again = SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account())
            .expect("its own parts");
        assert_eq!(again, id);
        let rest = s.strip_prefix("spiffe://").expect("the scheme");
        assert!(rest.is_ascii() && !rest.contains(['?', '#', '@', ':', '%', ' ']));
        assert_eq!(rest.matches('/').count(), 4);
    }
    if let Ok(claims) = tokens().verify(s) {
        // Only a token this key signed verifies; fuzzing cannot forge one,
        // so reaching here means one was issued.
        assert!(!claims.namespace.is_empty() && !claims.service_account.is_empty());
    }
    // A token the fuzzer's bytes name, issued and read back.
    if let Some((ns, sa)) = s.split_once('/') {
        if let Ok(t) = tokens().issue(ns, sa, std::time::Duration::from_secs(60)) {
            let claims = tokens().verify(&t).expect("a fresh token verifies");
            assert_eq!(
                (claims.namespace.as_str(), claims.service_account.as_str()),
                (ns, sa)
            );
        }
    }
});
