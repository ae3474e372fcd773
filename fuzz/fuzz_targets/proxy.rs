//! The PROXY v1/v2 header scan over arbitrary first bytes of a connection: no
//! panic; fed exactly the bytes it asks for (as `read_header` feeds it) it gives
//! the same verdict as with every byte at once, and a complete header is never
//! longer than the bytes it was given nor than the protocol allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proxy::{HeaderScan, V1_MAX, scan_header};

fuzz_target!(|input: &[u8]| {
    let at_once = scan_header(input);
    if let Ok(HeaderScan::Complete { consumed, .. }) = at_once {
        assert!(consumed <= input.len());
        assert!(consumed <= V1_MAX || input.starts_with(&postern::proxy::V2_SIGNATURE));
        assert!(consumed <= 16 + 1024);
    }
    // As read from a socket: exactly what it asks for, no more.
    let mut taken = 0;
    let stepped = loop {
        match scan_header(&input[..taken]) {
            Ok(HeaderScan::Need(n)) => {
                assert!(n > 0);
                if taken + n > input.len() {
                    break None;
                }
                taken += n;
            }
            Ok(HeaderScan::Complete { consumed, addr }) => {
                assert_eq!(consumed, taken);
                break Some(Ok(addr));
            }
            Err(e) => break Some(Err(e)),
        }
    };
    match (stepped, at_once) {
        (Some(Ok(a)), Ok(HeaderScan::Complete { addr, .. })) => assert_eq!(a, addr),
        (Some(Err(e)), Err(f)) => assert_eq!(e, f),
        (None, Ok(HeaderScan::Need(_))) => {}
        (s, w) => panic!("byte by byte {s:?}, at once {w:?}"),
    }
});
