//! Fingerprints of the settings that must match on every node (enc_password above all), as the
//! cluster store shows them: 16 hex digits of scrypt over the value, salted with the cluster's
//! random salt and the setting's name. The store (and anyone who reads it) learns whether two
//! nodes carry the same value, and nothing that tests a guess faster than one scrypt each.

use crate::tfe_files::validate::TfeConfig;
use std::collections::BTreeMap;
use std::io::Read;

/// HashiCorp's list of the settings every Active/Active node must share.
pub const MUST_MATCH: &[&str] = &[
    "enc_password",
    "install_id",
    "root_secret",
    "user_token",
    "archivist_token",
    "cookie_hash",
    "registry_session_encryption_key",
    "registry_session_secret_key",
    "internal_api_token",
];

/// scrypt's cost: N = 2^14, r = 8, p = 1 takes 128·N·r = 16 MiB and 50–90 ms of one core per
/// fingerprint in an optimized build (docs/development/benchmarks.md). A node computes one per
/// must-match setting per boot (9 by default, well inside the guard's 2 s), while each guess of
/// a value costs an attacker as much; the values are random tokens, so that is brute force of
/// 128-bit keys, made slower. Changing these changes every fingerprint: nodes of two agent
/// versions with different costs would all look mismatched.
const LOG_N: u8 = 14;
const R: u32 = 8;
const P: u32 = 1;
/// 8 bytes, shown as 16 hex digits: enough to tell values apart, too few to be a key.
const FINGERPRINT_BYTES: usize = 8;
const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("reading {SALT_BYTES} random bytes from /dev/urandom for a new cluster salt failed")]
    NewSalt(#[source] std::io::Error),
    #[error("the cluster identity's salt is not {} hex digits: {detail}", SALT_BYTES * 2)]
    ParseSalt { detail: String },
}

/// A cluster's KDF salt: random, created with the identity and kept in it. Not a secret (it only
/// makes every cluster's fingerprints its own), so it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt([u8; SALT_BYTES]);

/// A new salt from the kernel's CSPRNG. Read from /dev/urandom (never blocks once the kernel
/// pool is initialized, which it is long before the agent starts), so no RNG crate is needed:
/// fastrand, the one already a dependency, is not cryptographic.
pub fn new_salt() -> Result<Salt, FingerprintError> {
    let mut bytes = [0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(FingerprintError::NewSalt)?;
    Ok(Salt(bytes))
}

impl Salt {
    /// As the identity record holds it (text from the store: checked here).
    pub fn from_hex(hex: &str) -> Result<Salt, FingerprintError> {
        let invalid = |detail: &str| FingerprintError::ParseSalt {
            detail: detail.to_string(),
        };
        if hex.len() != SALT_BYTES * 2 {
            return Err(invalid(&format!("{} characters", hex.len())));
        }
        let mut bytes = [0u8; SALT_BYTES];
        // Checked digit by digit: `from_str_radix` alone would take a sign ("+f").
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("not hexadecimal"));
        }
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (digit(pair[0]) << 4) | digit(pair[1]);
        }
        Ok(Salt(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// The value of one ASCII hex digit (checked by the caller).
fn digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.to_ascii_lowercase() - b'a' + 10,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of `value` as the setting `setting` of a cluster with `salt`. The setting's
/// name is part of the salt, so two settings that happen to share a value (or a value copied
/// into the wrong setting) do not share a fingerprint.
pub fn fingerprint(salt: &Salt, setting: &str, value: &str) -> String {
    let mut kdf_salt = Vec::with_capacity(SALT_BYTES + setting.len());
    kdf_salt.extend_from_slice(&salt.0);
    kdf_salt.extend_from_slice(setting.as_bytes());
    // Constant, valid parameters (log_n < 64, r and p > 0; `len` is the simple API's and unused
    // by `scrypt::scrypt`), checked by every test that fingerprints.
    let params = scrypt::Params::new(LOG_N, R, P, scrypt::Params::RECOMMENDED_LEN)
        .expect("constant scrypt parameters are valid");
    let mut out = [0u8; FINGERPRINT_BYTES];
    // Fails only for an empty or over-long output, and this one is 8 bytes.
    scrypt::scrypt(value.as_bytes(), &kdf_salt, &params, &mut out)
        .expect("an 8-byte scrypt output is a valid length");
    hex(&out)
}

/// The fingerprint of every setting in `keys` the node renders (a key it does not set is left
/// out: the view shows that as its own group). 50–90 ms and 16 MiB each: call it off the async
/// threads (`spawn_blocking`), once per salt, not per heartbeat.
pub fn fingerprints(config: &TfeConfig, salt: &Salt, keys: &[String]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|key| {
            let value = config.settings.get(key)?;
            Some((key.clone(), fingerprint(salt, key, value.expose())))
        })
        .collect()
}

#[cfg(test)]
mod tests;
