use super::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

const VALUE: &str = "p@ss/w<rd>&\"q\"\\x?+~";

fn scanner(value: &[u8]) -> Scanner {
    Scanner::new(&[Needle {
        name: "shared secret key pg_password".into(),
        value,
    }])
}

fn found(value: &[u8], text: &[u8]) -> Vec<Encoding> {
    scanner(value)
        .scan("f", text)
        .into_iter()
        .map(|f| f.encoding)
        .collect()
}

/// `text` surrounded by unrelated bytes on both sides.
fn embedded(text: &[u8]) -> Vec<u8> {
    let mut out = b"2026-12-03T17:00:00Z agent[1]: value=".to_vec();
    out.extend_from_slice(text);
    out.extend_from_slice(b" end\n");
    out
}

#[test]
fn raw_value_is_found_and_named_by_its_name_only() {
    let findings = scanner(VALUE.as_bytes()).scan("journal.txt", &embedded(VALUE.as_bytes()));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].encoding, Encoding::Raw);
    let shown = findings[0].to_string();
    assert_eq!(shown, "journal.txt: shared secret key pg_password (raw)");
    assert!(!shown.contains(VALUE));
}

#[test]
fn json_escaped_forms_are_found() {
    let json = serde_json::to_string(VALUE).unwrap();
    assert_eq!(
        found(VALUE.as_bytes(), json.as_bytes()),
        [Encoding::JsonEscaped]
    );
    let go = r#"p@ss/w\u003crd\u003e\u0026\"q\"\\x?+~"#;
    assert_eq!(
        found(VALUE.as_bytes(), &embedded(go.as_bytes())),
        [Encoding::JsonEscapedGo]
    );
    // A PEM key's line breaks become \n in JSON.
    let pem = "-----BEGIN KEY-----\nMIIEabcdef\n-----END KEY-----\n";
    let doc = serde_json::json!({"key": pem}).to_string();
    assert_eq!(
        found(pem.as_bytes(), doc.as_bytes()),
        [Encoding::JsonEscaped]
    );
}

#[test]
fn base64_is_found_padded_or_not_and_at_every_offset_in_a_larger_blob() {
    for engine in [&STANDARD, &URL_SAFE] {
        let url = std::ptr::eq(engine, &URL_SAFE);
        for len in [8usize, 9, 10, 20, 21, 22] {
            let value: Vec<u8> = (0..len).map(|i| (i * 37 + 251) as u8).collect();
            for prefix in 0..6usize {
                for suffix in 0..4usize {
                    let mut blob = vec![b'A'; prefix];
                    blob.extend_from_slice(&value);
                    blob.extend(std::iter::repeat_n(b'z', suffix));
                    let padded = engine.encode(&blob);
                    let unpadded = padded.trim_end_matches('=');
                    for text in [padded.as_str(), unpadded] {
                        let hits = found(&value, &embedded(text.as_bytes()));
                        let offset = (prefix % 3) as u8;
                        let want = match url {
                            false => Encoding::Base64 { offset },
                            true => Encoding::Base64Url { offset },
                        };
                        // Both alphabets agree on most characters: either may name it first.
                        assert_eq!(
                            hits.len(),
                            1,
                            "len {len} prefix {prefix} suffix {suffix} url {url}"
                        );
                        let got = hits[0];
                        let same_offset = matches!(got, Encoding::Base64 { offset: o } | Encoding::Base64Url { offset: o } if o == offset);
                        assert!(same_offset || got == want, "{got} for {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn url_safe_base64_is_named_when_the_alphabets_differ() {
    // 0xfb 0xff encode to "+/" in the standard alphabet and "-_" in the URL-safe one.
    let value = [0xfbu8, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe];
    assert_eq!(
        found(&value, URL_SAFE.encode(value).as_bytes()),
        [Encoding::Base64Url { offset: 0 }]
    );
    assert_eq!(
        found(&value, STANDARD.encode(value).as_bytes()),
        [Encoding::Base64 { offset: 0 }]
    );
}

#[test]
fn hex_in_either_case_is_found() {
    let value = b"redis-SECRET-pass";
    let lower: String = value.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        found(value, &embedded(lower.as_bytes())),
        [Encoding::HexLower]
    );
    assert_eq!(
        found(value, &embedded(lower.to_uppercase().as_bytes())),
        [Encoding::HexUpper]
    );
}

#[test]
fn url_encoded_forms_are_found() {
    let value = b"pa ss/w:rd@host";
    assert_eq!(
        found(value, b"?p=pa%20ss%2Fw%3Ard%40host&x=1"),
        [Encoding::UrlEncoded]
    );
    assert_eq!(
        found(value, b"?p=pa%20ss%2fw%3ard%40host&x=1"),
        [Encoding::UrlEncodedLower]
    );
}

#[test]
fn binary_values_are_found_raw_and_encoded() {
    let license: Vec<u8> = (0u8..=255).cycle().take(300).collect();
    assert_eq!(found(&license, &embedded(&license)), [Encoding::Raw]);
    let hex: String = license.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(found(&license, hex.as_bytes()), [Encoding::HexLower]);
}

#[test]
fn negative_control_nothing_is_found_in_unrelated_or_near_miss_text() {
    let value = b"enc-SECRET-767fee4e6046de48";
    let clean = b"state.json {\"phase\":\"in_service\"} enc-SECRET-767fee4e6046de4 (one short) ENC-secret-767FEE4E6046DE48";
    assert!(found(value, clean).is_empty());
    // Its base64 with one character changed in the middle.
    let mut b64 = STANDARD.encode(value).into_bytes();
    b64[10] = if b64[10] == b'Q' { b'R' } else { b'Q' };
    assert!(found(value, &b64).is_empty());
}

#[test]
fn short_values_are_skipped_and_counted() {
    let s = Scanner::new(&[
        Needle {
            name: "a".into(),
            value: b"1",
        },
        Needle {
            name: "b".into(),
            value: b"1234567",
        },
        Needle {
            name: "c".into(),
            value: b"12345678",
        },
    ]);
    assert_eq!((s.skipped, s.secrets()), (2, 1));
    assert!(s.scan("f", b"port 1 and 1234567").is_empty());
    assert_eq!(s.scan("f", b"x12345678y").len(), 1);
}

#[test]
fn each_secret_is_reported_once_per_file_and_files_apart() {
    let s = Scanner::new(&[
        Needle {
            name: "one".into(),
            value: b"first-secret-value",
        },
        Needle {
            name: "two".into(),
            value: b"second-secret-value",
        },
    ]);
    let text = b"first-secret-value first-secret-value second-secret-value";
    let f = s.scan("drain.log", text);
    assert_eq!(
        f.iter().map(|f| f.secret.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert!(f.iter().all(|f| f.file == "drain.log"));
}
