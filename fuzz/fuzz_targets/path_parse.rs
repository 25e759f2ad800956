//! Path parsing: any string is parsed or refused without a panic; a parsed
//! path prints as a path that parses to itself, and its stored form (the
//! component list) decodes back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::NormalPath;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = NormalPath::parse(text) {
        let printed = p.to_string();
        assert_eq!(NormalPath::parse(&printed).as_ref(), Ok(&p), "{text:?} printed as {printed:?}");
        let stored = postcard::to_stdvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<NormalPath>(&stored).unwrap(), p);
    }
    // Stored bytes from anywhere decode only to paths that parse.
    if let Ok(p) = postcard::from_bytes::<NormalPath>(data) {
        assert_eq!(NormalPath::parse(&p.to_string()).as_ref(), Ok(&p));
    }
});
