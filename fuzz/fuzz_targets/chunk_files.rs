//! A chunk server's own files read back: the `.meta` record and the undo
//! record. Any bytes decode or are refused without a panic; a `.meta` that
//! decodes encodes to bytes that decode to the same replica.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_chunk::format::ReplicaMeta;
use shoal_chunk::undo;

fuzz_target!(|data: &[u8]| {
    let _ = ReplicaMeta::newer_format(data);
    if let Some(m) = ReplicaMeta::decode(data) {
        let again = ReplicaMeta::decode(&m.encode()).expect("an encoded replica meta decodes");
        assert_eq!(again, m);
    }
    let _ = undo::newer_format(data);
    if let Some(u) = undo::decode(data) {
        assert!(u.segments.iter().all(|(_, bytes)| bytes.len() <= data.len()));
    }
});
