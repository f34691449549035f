//! AFL target: `agent_config` (see tests/parser_oracle/mod.rs for what is checked).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        tfe_node_agent_fuzz::oracle::agent_config(data);
    });
}
