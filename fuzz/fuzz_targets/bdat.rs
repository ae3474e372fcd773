//! The BDAT framer over arbitrary content in arbitrary chunks, each fed in
//! arbitrary pieces: it never panics, never hands out a line with a bare CR or
//! LF or a NUL or over 1000 octets, what it hands out is always a prefix of the
//! content (never anything after a fault), and when it accepts the content,
//! the lines are the content byte for byte (with a CRLF added to an
//! unterminated last line) and the size is the sum of the chunk sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::bdat::{Chunks, Step};
use postern::smtp::data::MAX_TEXT_LINE;

fuzz_target!(|input: &[u8]| {
    // The first two bytes pick the chunk and piece sizes, so the cuts vary.
    let [chunk, piece, data @ ..] = input else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let piece = usize::from(*piece % 64).max(1);
    let max = 4096;
    let mut rx = Chunks::new(max);
    let mut out: Vec<u8> = Vec::new();
    for c in data.chunks(chunk) {
        rx.begin_chunk(c.len() as u64);
        for p in c.chunks(piece) {
            let mut pos = 0;
            loop {
                let line = match rx.step(&p[pos..]) {
                    Step::Need => break,
                    Step::Line { len } => {
                        let line = p[pos..pos + len].to_vec();
                        pos += len;
                        line
                    }
                    Step::Joined { consumed } => {
                        pos += consumed;
                        let line = rx.take_joined();
                        let copy = line.clone();
                        rx.restore(line);
                        copy
                    }
                    Step::Taken { consumed } => {
                        assert!(consumed > 0);
                        pos += consumed;
                        continue;
                    }
                };
                assert!(line.ends_with(b"\r\n"));
                assert!(line.len() <= MAX_TEXT_LINE);
                let text = &line[..line.len() - 2];
                assert!(!text.contains(&b'\r') && !text.contains(&b'\n') && !text.contains(&0));
                out.extend_from_slice(&line);
            }
            assert!(pos == p.len(), "octets of a chunk left over");
        }
    }
    assert!(
        data.starts_with(&out),
        "handed out what the content does not hold"
    );
    let mut tail = Vec::new();
    match rx.finish(&mut tail) {
        Ok(size) => {
            assert_eq!(size, data.len() as u64);
            out.extend_from_slice(&tail);
            let mut expected = data.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(out, expected);
        }
        Err(_) => assert!(tail.is_empty()),
    }
});
