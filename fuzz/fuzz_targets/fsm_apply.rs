//! The state machine's apply on arbitrary sequences of proposals (decoded
//! from the input as log entries' bodies would be, under this build's rules:
//! older rules numbers exist only to replay old logs as they were applied):
//! it refuses or applies each without a panic, and every invariant holds
//! after each one (`check_invariants`, which debug builds, as fuzz builds
//! are, also assert inside apply).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_meta::fsm::{FsState, Proposal, RULES};

fuzz_target!(|data: &[u8]| {
    let mut state = FsState::default();
    let mut rest = data;
    for _ in 0..64 {
        let Ok((mut p, tail)) = postcard::take_from_bytes::<Proposal>(rest) else { break };
        rest = tail;
        p.rules = RULES;
        state.apply(&p);
        if let Err(broken) = state.check_invariants() {
            panic!("after {p:?}: {broken}");
        }
    }
});
