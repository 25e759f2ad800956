//! What a meta node reads from disk or from a leader: a log segment, a log
//! entry, a snapshot file or a received snapshot. Any bytes are read or
//! refused without a panic; a segment's frames lie inside it, in sequence.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shoal_meta::format::{self, RecordKind};
use shoal_meta::log_store::segment;
use shoal_meta::{TypeConfig, sm_store};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = segment::scan_bytes(Path::new("fuzz.seg"), data, 1) {
        let mut end = segment::SEGMENT_HEADER_BYTES;
        for (i, f) in s.frames.iter().enumerate() {
            assert_eq!(f.index, 1 + i as u64);
            assert_eq!(f.offset, end);
            end += u64::from(f.len);
        }
        assert!(end <= data.len() as u64);
    }
    let _ =
        format::decode::<openraft::Entry<TypeConfig>>(RecordKind::LogEntry, data, format::upgrade_legacy_entry_json);
    let _ = sm_store::decode_file(data);
    let _ = sm_store::decode_received(data);
});
