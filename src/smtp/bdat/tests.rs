use super::*;

/// Frames `chunks` (each a BDAT chunk, fed in pieces of at most `piece`
/// octets): the lines handed out, joined, and the verdict.
fn frame(chunks: &[&[u8]], piece: usize, max: u64) -> (Vec<u8>, Result<u64, DataError>) {
    let mut rx = Chunks::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        rx.begin_chunk(chunk.len() as u64);
        for part in chunk.chunks(piece.max(1)) {
            let mut pos = 0;
            loop {
                match rx.step(&part[pos..]) {
                    Step::Need => break,
                    Step::Line { len } => {
                        out.extend_from_slice(&part[pos..pos + len]);
                        pos += len;
                    }
                    Step::Joined { consumed } => {
                        let line = rx.take_joined();
                        out.extend_from_slice(&line);
                        rx.restore(line);
                        pos += consumed;
                    }
                    Step::Taken { consumed } => {
                        assert!(consumed > 0);
                        pos += consumed;
                    }
                }
            }
        }
    }
    let result = rx.finish(&mut out);
    (out, result)
}

#[test]
fn lines_across_chunks_come_out_whole_and_byte_exact() {
    let content: &[u8] = b"Subject: x\r\n\r\n.\r\n..dots stay\r\nend\r\n";
    for split in 0..=content.len() {
        let (a, b) = content.split_at(split);
        for piece in [1, 2, 3, 7, 1000] {
            let (out, r) = frame(&[a, b], piece, 1 << 20);
            assert_eq!(r, Ok(content.len() as u64), "split {split} piece {piece}");
            assert_eq!(out, content, "split {split} piece {piece}");
        }
    }
}

#[test]
fn a_crlf_split_between_chunks_is_a_crlf() {
    let (out, r) = frame(&[b"one\r", b"\ntwo\r\n"], 1000, 100);
    assert_eq!(r, Ok(10));
    assert_eq!(out, b"one\r\ntwo\r\n");
}

#[test]
fn faults_poison_the_content_wherever_they_are() {
    let rows: &[(&[&[u8]], DataError)] = &[
        (&[b"a\nb\r\n"], DataError::BareLineEnding),
        (&[b"a\r\n\n"], DataError::BareLineEnding),
        (&[b"a", b"\n"], DataError::BareLineEnding),
        (&[b"a\rb\r\n"], DataError::BareLineEnding),
        (&[b"a\r", b"b\r\n"], DataError::BareLineEnding),
        (&[b"x\r\n.\n"], DataError::BareLineEnding),
        (&[b"x\r\n\r"], DataError::BareLineEnding),
        (&[b"x\r\n", b"\r"], DataError::BareLineEnding),
        (&[b"a\0b\r\n"], DataError::Nul),
        (&[b"a", b"\0\r\n"], DataError::Nul),
        (&[b"tail\0"], DataError::Nul),
    ];
    for (chunks, expected) in rows {
        for piece in [1, 1000] {
            let (out, r) = frame(chunks, piece, 1 << 20);
            assert_eq!(r, Err(*expected), "{chunks:?} piece {piece}");
            for line in out.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\r\n"), "{chunks:?}: {out:?}");
                let text = &line[..line.len() - 2];
                assert!(!text.contains(&b'\r') && !text.contains(&b'\n') && !text.contains(&0));
            }
        }
    }
}

#[test]
fn nothing_follows_a_fault() {
    let (out, r) = frame(&[b"good\r\nbad\nlater\r\n", b"more\r\n"], 1000, 1 << 20);
    assert_eq!(r, Err(DataError::BareLineEnding));
    assert_eq!(out, b"good\r\n");
}

#[test]
fn lines_are_limited_to_1000_octets_across_chunks() {
    let mut ok = vec![b'x'; MAX_TEXT_LINE - 2];
    ok.extend_from_slice(b"\r\n");
    let (a, b) = ok.split_at(500);
    assert_eq!(frame(&[a, b], 1000, 1 << 20).1, Ok(MAX_TEXT_LINE as u64));
    let mut long = vec![b'x'; MAX_TEXT_LINE - 1];
    long.extend_from_slice(b"\r\n");
    let (a, b) = long.split_at(700);
    for piece in [1, 64, 1000, 4096] {
        assert_eq!(
            frame(&[a, b], piece, 1 << 20).1,
            Err(DataError::LineTooLong),
            "piece {piece}"
        );
        assert_eq!(
            frame(&[&long], piece, 1 << 20).1,
            Err(DataError::LineTooLong)
        );
    }
    // An unterminated last line counts its added CRLF.
    let tail = vec![b'x'; MAX_TEXT_LINE - 1];
    assert_eq!(
        frame(&[&tail], 1000, 1 << 20).1,
        Err(DataError::LineTooLong)
    );
}

#[test]
fn the_size_is_checked_from_the_chunk_size_before_any_octet() {
    let mut rx = Chunks::new(10);
    rx.begin_chunk(6);
    assert_eq!(rx.error(), None);
    rx.begin_chunk(5);
    assert_eq!(rx.error(), Some(DataError::TooBig));
    // A chunk size near the top of u64 neither overflows nor allocates.
    let mut rx = Chunks::new(10);
    rx.begin_chunk(u64::MAX);
    rx.begin_chunk(u64::MAX);
    assert_eq!(rx.error(), Some(DataError::TooBig));
    assert_eq!(rx.step(b"abc\r\n"), Step::Taken { consumed: 5 });
    assert!(rx.carry.capacity() == 0);
    assert_eq!(rx.finish(&mut Vec::new()), Err(DataError::TooBig));
    // Exactly the limit is fine.
    assert_eq!(frame(&[b"12345678\r\n"], 3, 10).1, Ok(10));
    assert_eq!(frame(&[b"12345678\r\n", b""], 3, 10).1, Ok(10));
    assert_eq!(frame(&[b"123456789\r\n"], 3, 10).1, Err(DataError::TooBig));
}

#[test]
fn an_unterminated_last_line_gets_its_crlf() {
    let (out, r) = frame(&[b"Subject: x\r\n\r\nno end"], 4, 100);
    assert_eq!(r, Ok(20));
    assert_eq!(out, b"Subject: x\r\n\r\nno end\r\n");
    let (out, r) = frame(&[], 4, 100);
    assert_eq!((out, r), (Vec::new(), Ok(0)));
    let (out, r) = frame(&[b"", b""], 4, 100);
    assert_eq!((out, r), (Vec::new(), Ok(0)));
}

/// The fuzz target's invariants (`fuzz/fuzz_targets/bdat.rs`) over a few
/// thousand generated inputs, so `cargo test` checks them too.
#[test]
fn generated_content_keeps_the_fuzz_invariants() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const ALPHABET: &[u8] = b"ab.\r\n\r\n\r\n\0x";
    for _ in 0..5000 {
        let len = (next() % 300) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
            .collect();
        let chunk = (next() % 40 + 1) as usize;
        let piece = (next() % 9 + 1) as usize;
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        let (out, r) = frame(&chunks, piece, 200);
        for line in out.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "{data:?}");
            let text = &line[..line.len() - 2];
            assert!(!text.contains(&b'\r') && !text.contains(&b'\n') && !text.contains(&0));
        }
        match r {
            Ok(size) => {
                assert_eq!(size, data.len() as u64);
                let mut expected = data.clone();
                if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                    expected.extend_from_slice(b"\r\n");
                }
                assert_eq!(out, expected, "{data:?}");
            }
            Err(_) => assert!(data.starts_with(&out), "{data:?} gave {out:?}"),
        }
    }
}
