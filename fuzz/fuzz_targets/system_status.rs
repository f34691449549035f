//! AFL target: `system_status` (see tests/parser_oracle/mod.rs for what is checked).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        tfe_node_agent_fuzz::oracle::system_status(data);
    });
}
