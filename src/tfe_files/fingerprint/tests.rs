use super::*;
use crate::testing::{self, valid_shared, EXAMPLE_CONFIG};

const SALT_HEX: &str = "000102030405060708090a0b0c0d0e0f";

fn salt() -> Salt {
    Salt::from_hex(SALT_HEX).unwrap()
}

fn is_fingerprint(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[test]
fn fingerprints_match_an_independent_scrypt() {
    // Python's hashlib.scrypt (OpenSSL's implementation), not this crate's:
    //   hashlib.scrypt(value.encode(), salt=bytes(range(16)) + setting.encode(),
    //                  n=2**14, r=8, p=1, maxmem=64 << 20, dklen=8).hex()
    // Pinned: a change of cost, encoding or salt layout would make every node of the new agent
    // look mismatched against the old ones.
    assert_eq!(
        fingerprint(&salt(), "enc_password", "767fee4e6046de48943df2decc55f3cd"),
        "327d26c19459cd8f"
    );
    assert_eq!(
        fingerprint(&salt(), "install_id", "28f5d86814893a45faafbff52ad1efc0"),
        "bd4bcf6b24318f41"
    );
}

#[test]
fn a_fingerprint_is_stable_and_differs_per_value_setting_and_salt() {
    let value = "80fc62a320240b02e28da24c3554e1c4";
    let one = fingerprint(&salt(), "internal_api_token", value);
    assert!(is_fingerprint(&one), "{one}");
    assert_eq!(fingerprint(&salt(), "internal_api_token", value), one);
    // The same value as another setting: not the same fingerprint.
    assert_ne!(fingerprint(&salt(), "user_token", value), one);
    // Another cluster's salt.
    let other_salt = Salt::from_hex("ff0102030405060708090a0b0c0d0e0f").unwrap();
    assert_ne!(fingerprint(&other_salt, "internal_api_token", value), one);
    // One character of the value.
    assert_ne!(
        fingerprint(
            &salt(),
            "internal_api_token",
            "80fc62a320240b02e28da24c3554e1c5"
        ),
        one
    );
}

#[test]
fn a_nodes_fingerprints_cover_the_must_match_settings_and_never_show_a_value() {
    let tfe = testing::tfe_config(EXAMPLE_CONFIG, valid_shared(), vec![]).unwrap();
    let mut keys: Vec<String> = MUST_MATCH.iter().map(|k| k.to_string()).collect();
    keys.push("not_a_setting_this_node_has".into());
    let prints = fingerprints(&tfe, &salt(), &keys);
    assert_eq!(
        prints.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut all = MUST_MATCH.to_vec();
            all.sort_unstable();
            all
        },
        "every must-match setting, and nothing for a key the node does not set"
    );
    assert_eq!(
        prints["enc_password"], "327d26c19459cd8f",
        "the same as fingerprint() of the rendered value"
    );
    let values: Vec<String> = valid_shared()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let shown = format!("{prints:?}");
    for (key, print) in &prints {
        assert!(is_fingerprint(print), "{key}: {print}");
        for value in &values {
            assert!(!shown.contains(value.as_str()), "{key} shows a value");
            assert!(!value.contains(print.as_str()), "{key} is part of a value");
        }
    }
    // Nine settings, nine distinct fingerprints (their values differ, and so do their names).
    let distinct: std::collections::BTreeSet<_> = prints.values().collect();
    assert_eq!(distinct.len(), prints.len());
}

#[test]
fn a_salt_reads_back_as_written() {
    let salt = salt();
    assert_eq!(salt.to_hex(), SALT_HEX);
    assert_eq!(
        Salt::from_hex("000102030405060708090A0B0C0D0E0F").unwrap(),
        salt,
        "upper case reads as the same bytes"
    );
}

#[test]
fn a_salt_that_is_not_32_hex_digits_is_refused_saying_why() {
    for (text, why) in [
        ("", "0 characters"),
        ("0001", "4 characters"),
        ("000102030405060708090a0b0c0d0e0f00", "34 characters"),
        ("000102030405060708090a0b0c0d0e0g", "not hexadecimal"),
        ("+f0102030405060708090a0b0c0d0e0f", "not hexadecimal"),
        ("00010203040506070809é0b0c0d0e0f", "not hexadecimal"),
    ] {
        let err = Salt::from_hex(text).unwrap_err();
        assert!(matches!(err, FingerprintError::ParseSalt { .. }), "{text}");
        assert_eq!(
            err.to_string(),
            format!("the cluster identity's salt is not 32 hex digits: {why}"),
            "{text:?}"
        );
    }
}

#[test]
fn new_salts_are_random_and_read_back() {
    let a = new_salt().unwrap();
    let b = new_salt().unwrap();
    assert_ne!(a, b, "two reads of 16 random bytes");
    assert_eq!(a.to_hex().len(), 32);
    assert_eq!(Salt::from_hex(&a.to_hex()).unwrap(), a);
}

/// Not a speed assertion: prints what one fingerprint costs in this build.
///   cargo test --lib fingerprint_cost -- --ignored --nocapture
#[test]
#[ignore]
fn fingerprint_cost() {
    let salt = salt();
    let rounds = 20u32;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        fingerprint(&salt, "enc_password", &format!("value-{i}"));
    }
    let each = start.elapsed() / rounds;
    println!("one fingerprint (N=2^{LOG_N}, r={R}, p={P}): {each:?}");
}
