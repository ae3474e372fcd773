//! DATA framer tests: tables for the framing rules and the smuggling endings,
//! and properties (proptest) over arbitrary input and split points.

use proptest::prelude::*;

use super::*;

/// What a run of the receiver gives: the content, the end's verdict (`None`
/// if the input ran out first) and how many input bytes were left after the end.
type Outcome = (Vec<u8>, Option<Result<u64, DataError>>, usize);

/// Runs the receiver over `input` in one buffer.
fn run(input: &[u8], max: u64) -> Outcome {
    run_pieces([input], max)
}

/// The same, with the input arriving `chunk` bytes at a time.
fn run_chunked(input: &[u8], max: u64, chunk: usize) -> Outcome {
    run_pieces(input.chunks(chunk), max)
}

/// The same, with the input arriving in two pieces split at `at`.
fn run_split(input: &[u8], max: u64, at: usize) -> Outcome {
    run_pieces([&input[..at], &input[at..]], max)
}

/// Feeds `pieces` one at a time, each when the receiver asks for more.
fn run_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, max: u64) -> Outcome {
    let mut pieces = pieces.into_iter();
    let mut rx = Receiver::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    loop {
        match rx.step(&buf) {
            Step::Need => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return (out, None, 0),
            },
            Step::Content {
                start,
                len,
                consumed,
            } => {
                out.extend_from_slice(&buf[start..start + len]);
                buf.drain(..consumed);
            }
            Step::Skip { consumed } => {
                buf.drain(..consumed);
            }
            Step::End { consumed, result } => {
                buf.drain(..consumed);
                let later: usize = pieces.map(<[u8]>::len).sum();
                return (out, Some(result), buf.len() + later);
            }
        }
    }
}

type Row = (&'static [u8], &'static [u8], Option<Result<u64, DataError>>);

#[test]
fn framing_table() {
    use DataError::*;
    let rows: &[Row] = &[
        (b".\r\n", b"", Some(Ok(0))),
        (b"hello\r\n.\r\n", b"hello\r\n", Some(Ok(7))),
        (b"..dot\r\n.\r\n", b".dot\r\n", Some(Ok(6))),
        (b"...\r\n.\r\n", b"..\r\n", Some(Ok(4))),
        (
            b".x\r\nmid . line\r\n.\r\n",
            b"x\r\nmid . line\r\n",
            Some(Ok(15)),
        ),
        (b"\xc3\xbc 8bit\r\n.\r\n", b"\xc3\xbc 8bit\r\n", Some(Ok(9))),
        (b"no end\r\n", b"no end\r\n", None),
        // The five smuggling endings: none of them ends the message, all poison it.
        (
            b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
            b"",
            Some(Err(BareLineEnding)),
        ),
        (
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"",
            Some(Err(BareLineEnding)),
        ),
        (
            b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n",
            Some(Err(BareLineEnding)),
        ),
        (
            b"a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"",
            Some(Err(BareLineEnding)),
        ),
        (
            b"a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n",
            Some(Err(BareLineEnding)),
        ),
        (b"bare\rcr\r\n.\r\n", b"", Some(Err(BareLineEnding))),
        // NUL: `CRLF NUL . CRLF` is no end (a NUL-dropping receiver would read one)
        // and poisons the message like a bare line end, with its own error.
        (
            b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n",
            Some(Err(Nul)),
        ),
        (b"x\0y\r\n.\r\n", b"", Some(Err(Nul))),
        (b"\0\r\n.\r\n", b"", Some(Err(Nul))),
        (b"..\0\r\nok\r\n.\r\n", b"", Some(Err(Nul))),
        (b"a\0b\rc\r\n.\r\n", b"", Some(Err(Nul))),
        (b"a\rb\0c\r\n.\r\n", b"", Some(Err(BareLineEnding))),
    ];
    for (input, want_out, want_end) in rows {
        for chunk in [input.len(), 1, 3] {
            let (out, end, _) = run_chunked(input, 1 << 20, chunk);
            let label = String::from_utf8_lossy(input);
            assert_eq!(
                &out[..],
                *want_out,
                "content of {label:?} in chunks of {chunk}"
            );
            assert_eq!(end, *want_end, "end of {label:?} in chunks of {chunk}");
        }
    }
}

#[test]
fn leftover_after_end_is_not_consumed() {
    let (_, end, left) = run(b"x\r\n.\r\nQUIT\r\n", 100);
    assert_eq!(end, Some(Ok(3)));
    assert_eq!(left, 6);
}

#[test]
fn size_cap_counts_unstuffed_octets() {
    assert_eq!(run(b"..ab\r\n.\r\n", 5).1, Some(Ok(5)));
    assert_eq!(run(b"abcd\r\n.\r\n", 5).1, Some(Err(DataError::TooBig)));
}

#[test]
fn long_lines_are_refused_and_discarded_in_bounded_steps() {
    let mut input = vec![b'x'; 999];
    input.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(run(&input, 1 << 20).1, Some(Err(DataError::LineTooLong)));
    let mut ok = vec![b'x'; 998];
    ok.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(run(&ok, 1 << 20).1, Some(Ok(1000)));
    // A megabyte with no line end, then a real end: refused, and the end is still found.
    let mut huge = vec![b'y'; 1 << 20];
    huge.extend_from_slice(b"\r\n.\r\n");
    for chunk in [4096, 1 << 20] {
        assert_eq!(
            run_chunked(&huge, 1 << 30, chunk).1,
            Some(Err(DataError::LineTooLong))
        );
    }
}

/// Bytes that matter to the framer, mostly; any byte now and then.
fn data_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(&b"a.\r\n"[..]),
        1 => Just(0u8),
        1 => any::<u8>(),
    ]
}

/// A bare CR (not before LF) or bare LF (not after CR) or NUL in `input`.
fn has_forbidden(input: &[u8]) -> bool {
    input.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || input[i - 1] != b'\r'))
            || (b == b'\r' && input.get(i + 1) != Some(&b'\n'))
            || b == 0
    })
}

/// One content line as a device might send it: no CR, LF or NUL, within the limit.
fn content_line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => Just(b'.'), 6 => b'a'..=b'z', 1 => 0x80u8..=0xff, 1 => Just(b' ')],
        0..40,
    )
    .prop_map(|mut v| {
        v.extend_from_slice(b"\r\n");
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Split anywhere, the framer says the same: same content, same verdict,
    /// same bytes left over after the end.
    #[test]
    fn same_result_at_every_split_point(input in prop::collection::vec(data_byte(), 0..48)) {
        let whole = run(&input, 1 << 20);
        for at in 0..=input.len() {
            prop_assert_eq!(&run_split(&input, 1 << 20, at), &whole, "split at {}", at);
        }
        for chunk in 1..4 {
            prop_assert_eq!(&run_chunked(&input, 1 << 20, chunk), &whole, "chunks of {}", chunk);
        }
    }

    /// Content lines are CRLF-terminated with no CR, LF or NUL inside; the end
    /// is only ever a `.` line after a CRLF, and the message is refused exactly
    /// when the input up to the end holds a bare CR, bare LF or NUL.
    #[test]
    fn content_is_clean_and_refusal_is_exact(input in prop::collection::vec(data_byte(), 0..64)) {
        let mut rx = Receiver::new(1 << 20);
        let mut pos = 0;
        let mut prev_ended_crlf = true;
        loop {
            match rx.step(&input[pos..]) {
                Step::Need => break,
                Step::Content { start, len, consumed } => {
                    let line = &input[pos + start..pos + start + len];
                    prop_assert!(line.ends_with(b"\r\n"));
                    let inner = &line[..line.len() - 2];
                    prop_assert!(!inner.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
                    prev_ended_crlf = true;
                    pos += consumed;
                }
                Step::Skip { consumed } => {
                    prop_assert!(consumed > 0 && rx.is_poisoned());
                    prev_ended_crlf = input[..pos + consumed].ends_with(b"\r\n");
                    pos += consumed;
                }
                Step::End { consumed, result } => {
                    prop_assert_eq!(&input[pos..pos + consumed], b".\r\n");
                    prop_assert!(prev_ended_crlf, "ended after a bare line end");
                    prop_assert_eq!(result.is_err(), has_forbidden(&input[..pos + consumed]));
                    break;
                }
            }
        }
    }

    /// Dot-stuffing round-trips: lines stuffed for the wire and framed again are
    /// the same lines, their size counted unstuffed, and the wire form re-stuffed
    /// from the framer's output is byte for byte what was sent.
    #[test]
    fn dot_stuffing_round_trips(lines in prop::collection::vec(content_line(), 0..12)) {
        let mut wire = Vec::new();
        for line in &lines {
            stuff_line(line, &mut wire);
        }
        let content: Vec<u8> = lines.concat();
        let mut with_end = wire.clone();
        with_end.extend_from_slice(b".\r\n");
        let (out, end, left) = run(&with_end, 1 << 20);
        prop_assert_eq!(&out, &content);
        prop_assert_eq!(end, Some(Ok(content.len() as u64)));
        prop_assert_eq!(left, 0);
        let mut restuffed = Vec::new();
        let mut rest = &out[..];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            stuff_line(&rest[..=i], &mut restuffed);
            rest = &rest[i + 1..];
        }
        prop_assert_eq!(restuffed, wire);
    }
}

#[test]
fn restuffing_round_trips() {
    let mut out = Vec::new();
    for line in [&b".x\r\n"[..], b"y\r\n", b".\r\n"] {
        stuff_line(line, &mut out);
    }
    assert_eq!(out, b"..x\r\ny\r\n..\r\n");
}
