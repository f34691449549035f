//! AFL target: the shared secret's SecretString through decoding and validation, against the
//! config its first byte picks (see tests/parser_oracle/mod.rs for what is checked).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Some((&config, secret)) = data.split_first() {
            tfe_node_agent_fuzz::oracle::shared_secret(config, secret);
        }
    });
}
