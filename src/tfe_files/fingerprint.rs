//! Fingerprints of the settings that must match on every node (enc_password above all), as the
//! cluster store shows them: 16 hex digits of scrypt over the value, salted with the cluster's
//! random salt and the setting's name. The store (and anyone who reads it) learns whether two
//! nodes carry the same value, and nothing that tests a guess faster than one scrypt each.

use crate::tfe_files::validate::TfeConfig;
use std::collections::BTreeMap;
use std::io::Read;

/// scrypt's cost: N = 2^14, r = 8, p = 1 takes 128·N·r = 16 MiB and 50–90 ms of one core per
/// fingerprint in an optimized build (docs/development/benchmarks.md). A node computes one per
/// must-match setting per salt (9 by default, well inside the guard's 2 s), while each guess of
/// a value costs an attacker as much; the values are random tokens, so that is brute force of
/// 128-bit keys, made slower. Changing these changes every fingerprint: nodes of two agent
/// versions with different costs would all look mismatched.
const LOG_N: u8 = 14;
const R: u32 = 8;
const P: u32 = 1;
/// 8 bytes, shown as 16 hex digits: enough to tell values apart, too few to be a key.
const FINGERPRINT_BYTES: usize = 8;
/// 128 random bits per cluster.
const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("reading {SALT_BYTES} random bytes from /dev/urandom failed")]
    NewSalt(#[source] std::io::Error),
}

/// 16 random bytes as 32 hex digits: a new cluster's salt (and a fine cluster id). From the
/// kernel's CSPRNG through /dev/urandom (which never blocks once the pool is initialized, long
/// before the agent starts), so no RNG crate is needed: fastrand, the one already a dependency,
/// is not cryptographic.
pub fn new_salt() -> Result<String, FingerprintError> {
    let mut bytes = [0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(FingerprintError::NewSalt)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The fingerprint of `value` as the setting `setting` of the cluster whose identity holds
/// `salt`. The KDF's salt is the salt's text as the identity holds it (32 hex digits: the same
/// 128 random bits as the bytes they spell), so there is nothing to parse and nothing a node can
/// fail to read: every node that reads one identity derives the same fingerprints. The setting's
/// name follows it, so two settings that share a value (or a value copied into the wrong
/// setting) do not share a fingerprint.
pub fn fingerprint(salt: &str, setting: &str, value: &str) -> String {
    let kdf_salt = [salt.as_bytes(), setting.as_bytes()].concat();
    // Constant, valid parameters (log_n < 64, r and p > 0; `len` is the simple API's and unused
    // by `scrypt::scrypt`), exercised by every test that fingerprints.
    let params = scrypt::Params::new(LOG_N, R, P, scrypt::Params::RECOMMENDED_LEN)
        .expect("constant scrypt parameters are valid");
    let mut out = [0u8; FINGERPRINT_BYTES];
    // Fails only for an empty or over-long output, and this one is 8 bytes.
    scrypt::scrypt(value.as_bytes(), &kdf_salt, &params, &mut out)
        .expect("an 8-byte scrypt output is a valid length");
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of every setting in `keys` the node renders (a key it does not set is left
/// out: the view shows that as a group of its own). 50–90 ms and 16 MiB each: call it off the
/// async threads (`spawn_blocking`), once per salt, not per heartbeat.
pub fn fingerprints(config: &TfeConfig, salt: &str, keys: &[String]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|key| {
            let value = config.settings.get(key)?;
            Some((key.clone(), fingerprint(salt, key, value.expose())))
        })
        .collect()
}

#[cfg(test)]
mod tests;
