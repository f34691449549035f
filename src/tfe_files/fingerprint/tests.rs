use super::*;
use crate::testing::{self, valid_shared, EXAMPLE_CONFIG};

const SALT: &str = "000102030405060708090a0b0c0d0e0f";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[test]
fn fingerprints_match_an_independent_scrypt() {
    // Python's hashlib.scrypt (OpenSSL's implementation), not this crate's:
    //   hashlib.scrypt(value.encode(), salt=salt.encode() + setting.encode(),
    //                  n=2**14, r=8, p=1, maxmem=64 << 20, dklen=8).hex()
    // Pinned: a change of cost, encoding or salt layout would make every node of the new agent
    // look mismatched against the old ones.
    assert_eq!(
        fingerprint(SALT, "enc_password", "767fee4e6046de48943df2decc55f3cd"),
        "b4d7d28413af461d"
    );
    assert_eq!(
        fingerprint(SALT, "install_id", "28f5d86814893a45faafbff52ad1efc0"),
        "886a9ebc7c1b5dae"
    );
}

#[test]
fn a_fingerprint_is_stable_and_differs_per_value_setting_and_salt() {
    let value = "80fc62a320240b02e28da24c3554e1c4";
    let one = fingerprint(SALT, "internal_api_token", value);
    assert!(is_hex(&one, 16), "{one}");
    assert_eq!(fingerprint(SALT, "internal_api_token", value), one);
    // The same value as another setting: not the same fingerprint.
    assert_ne!(fingerprint(SALT, "user_token", value), one);
    // Another cluster's salt.
    let other_salt = "ff0102030405060708090a0b0c0d0e0f";
    assert_ne!(fingerprint(other_salt, "internal_api_token", value), one);
    // One character of the value.
    assert_ne!(
        fingerprint(
            SALT,
            "internal_api_token",
            "80fc62a320240b02e28da24c3554e1c5"
        ),
        one
    );
}

#[test]
fn a_nodes_fingerprints_cover_the_must_match_settings_and_never_show_a_value() {
    let tfe = testing::tfe_config(EXAMPLE_CONFIG, valid_shared(), vec![]).unwrap();
    let mut keys: Vec<String> = crate::config::MUST_MATCH
        .iter()
        .map(|k| k.to_string())
        .collect();
    keys.push("not_a_setting_this_node_has".into());
    let prints = fingerprints(&tfe, SALT, &keys);
    let mut expected = crate::config::MUST_MATCH.to_vec();
    expected.sort_unstable();
    assert_eq!(
        prints.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "every must-match setting, and nothing for a key the node does not set"
    );
    assert_eq!(
        prints["enc_password"], "b4d7d28413af461d",
        "the same as fingerprint() of the rendered value"
    );
    let values: Vec<String> = valid_shared()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let shown = format!("{prints:?}");
    for (key, print) in &prints {
        assert!(is_hex(print, 16), "{key}: {print}");
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
fn new_salts_are_32_random_hex_digits() {
    let a = new_salt().unwrap();
    let b = new_salt().unwrap();
    assert!(is_hex(&a, 32), "{a}");
    assert!(is_hex(&b, 32), "{b}");
    assert_ne!(a, b, "two reads of 16 random bytes");
}

/// Not a speed assertion: prints what one fingerprint costs in this build.
///   cargo test --lib fingerprint_cost -- --ignored --nocapture
#[test]
#[ignore]
fn fingerprint_cost() {
    let rounds = 20u32;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        fingerprint(SALT, "enc_password", &format!("value-{i}"));
    }
    let each = start.elapsed() / rounds;
    println!("one fingerprint (N=2^{LOG_N}, r={R}, p={P}): {each:?}");
}
